"""What every tiny-model builder shares: the completeness marker and the atomic save."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

# Bump a family's version when anything changes its weights or layout: it is part of every cache key.
TINY_SANA_VERSION = 2
TINY_SD3_VERSION = 2
TINY_SANAVIDEO_VERSION = 1
DEMO_SANA_VERSION = 2
MARKER = "tiny.json"
_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_SD3_PARTS = _PARTS + ("text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
VERSIONS = {"sana": TINY_SANA_VERSION, "sd3": TINY_SD3_VERSION, "sanavideo": TINY_SANAVIDEO_VERSION,
            "sana-demo": DEMO_SANA_VERSION}
_PARTS_OF = {"sana": _PARTS, "sd3": _SD3_PARTS, "sanavideo": _PARTS, "sana-demo": _PARTS}


def _marker(seed: int, family: str = "sana") -> dict:
    return {"builder": "tuner.engine.tiny", "family": family, "version": VERSIONS[family], "seed": seed}


def is_complete(out: Path, seed: int = 0, family: str = "sana") -> bool:
    """Whether `out` already holds this builder version's tiny model of `family` for `seed`."""
    marker = out / MARKER
    if not marker.is_file() or not (out / "model_index.json").is_file():
        return False
    try:
        found = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return found == _marker(seed, family) and all((out / part).is_dir() for part in _PARTS_OF[family])



def _save_atomically(pipe, out: Path, seed: int, family: str) -> Path:
    """Save `pipe` with its marker next to `out` and rename it there, so an interrupted build never looks complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / MARKER).write_text(json.dumps(_marker(seed, family), indent=2) + "\n")
        if is_complete(out, seed, family):  # another process finished the same build first
            return out
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
