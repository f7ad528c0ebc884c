"""LyCORIS settings (the lycoris_config file), read without torch so `tuner check`, the VRAM estimate and
the adapters all take them from one place."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# LyCORIS' own default for a linear_dim this large: no low-rank split, the full Kronecker factors.
FULL_DIM = 10000
LOKR_DEFAULTS: dict[str, Any] = {"algo": "lokr", "multiplier": 1.0, "linear_dim": FULL_DIM, "linear_alpha": 1,
                                 "factor": 16, "dropout": 0.0,
                                 "apply_preset": {"target_module": ["Attention"]}}
ALGORITHMS = ("lokr",)   # what engine/adapters.py builds


def lycoris_problems(path: str | Path) -> list[tuple[str, str]]:
    """(key, what to do) for each problem of a lycoris_config file; [] when it can train."""
    try:
        given = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [("(file)", f"cannot read it: {exc}; give a JSON file such as {json.dumps(LOKR_DEFAULTS)}")]
    if not isinstance(given, dict):
        return [("(file)", f"expected a JSON object like {json.dumps(LOKR_DEFAULTS)}")]
    algo = given.get("algo", LOKR_DEFAULTS["algo"])
    if algo not in ALGORITHMS:
        return [("algo", f"{algo!r} is not implemented (tuner trains LoKr); set \"algo\": \"lokr\"")]
    return []


def read_lycoris_config(path: str | Path | None) -> dict[str, Any]:
    """The lycoris_config JSON merged over tuner's LoKr defaults; ValueError names the file, key and fix."""
    config = json.loads(json.dumps(LOKR_DEFAULTS))
    if not path:
        return config
    problems = lycoris_problems(path)
    if problems:
        key, message = problems[0]
        raise ValueError(f"{path}: {key}: {message}")
    config.update(json.loads(Path(path).read_text()))
    return config
