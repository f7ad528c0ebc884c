"""Putting a preset onto a config and its datasets, and checking a preset against the config model.

Precedence, lowest first: the base config (defaults, or the user's file) < the preset's keys <
the edits the user makes in the wizard afterwards (the wizard applies those after this). A key
the preset does not name keeps the base's value.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .loader import Preset

# Dataset entries of these types hold pixels; text-embed caches take no resolution or crop.
PIXEL_DATASET_TYPES = {None, "image", "video"}

# Stand-ins for the keys every real config has but a hardware preset never sets, so that the
# config model can judge the preset's own keys.
_PLACEHOLDER_BASE = {
    "pretrained_model_name_or_path": "preset-check/placeholder-model",
    "output_dir": "preset-check-output",
}
_PLACEHOLDER_DATASETS = [
    {"id": "preset-check-images", "type": "local", "instance_data_dir": "preset-check-images", "caption_strategy": "filename"},
    {"id": "preset-check-videos", "type": "local", "dataset_type": "video", "instance_data_dir": "preset-check-videos",
     "caption_strategy": "textfile", "video": {"num_frames": 81}},
    {"id": "preset-check-text", "type": "local", "dataset_type": "text_embeds", "default": True, "cache_dir": "preset-check-text"},
]


def apply_preset(
    preset: Preset, config: dict[str, Any], datasets: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """New (config, datasets) with the preset laid over copies of the given ones; the inputs stay unchanged."""
    out = copy.deepcopy(config)
    overlay = {"model_family": preset.model_family, "model_type": preset.model_type, **preset.config}
    for key, value in overlay.items():
        # A SimpleTuner-style '--key' in the base would otherwise survive beside the preset's 'key'.
        out.pop(f"--{key}", None)
        out[key] = copy.deepcopy(value)
    return out, [_apply_dataset(preset.dataset, entry) for entry in (datasets or [])]


def _apply_dataset(overlay: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(entry)
    kind = out.get("dataset_type")
    if kind not in PIXEL_DATASET_TYPES:
        return out
    for key, value in overlay.items():
        if key == "video":
            # The video block only means something on video datasets, and merges key by key.
            if kind == "video":
                out["video"] = {**(out.get("video") or {}), **copy.deepcopy(value)}
            continue
        out[key] = copy.deepcopy(value)
    return out


def check_preset(preset: Preset) -> list[Any]:
    """The config model's findings (errors and warnings, as Issue objects) about the preset's own keys.

    An overlay alone lacks the keys every run has (model path, output folder, datasets), so it is
    checked on top of placeholders for those, and only findings about the preset's keys count.
    """
    from tuner.engine.config import ConfigBundle, parse_datasets, parse_train_config
    from tuner.engine.config.rules import run_rules

    base = {"model_family": preset.model_family, "model_type": preset.model_type, **_PLACEHOLDER_BASE}
    config, datasets = apply_preset(preset, base, _PLACEHOLDER_DATASETS)
    file = str(preset.path)
    train, issues = parse_train_config(config, file=file)
    parsed, dataset_issues = parse_datasets(datasets, file=file)
    own = {"model_family", "model_type", *preset.config, *preset.dataset}
    found = [_renamed(i, f"config.{i.key}") for i in issues if _config_key(i.key) in own]
    found += [_renamed(i, "dataset." + i.key.split(".", 1)[1]) for i in dataset_issues if _dataset_key(i.key) in own]
    if train is not None and parsed is not None:
        bundle = ConfigBundle(train=train, datasets=parsed, prompts={}, config_path=preset.path,
                              databackend_path=None, prompts_path=None)
        found += [i for i in run_rules(bundle) if _config_key(i.key) in own or _dataset_key(i.key) in own]
    # The placeholder datasets repeat one overlay finding per dataset; the user needs it once.
    unique = {(i.level, i.key, i.message): i for i in found}
    return list(unique.values())


def _renamed(issue: Any, key: str) -> Any:
    # Name the key as it is spelled in the preset file ([config] / [dataset] tables).
    return dataclasses.replace(issue, key=key)


def _config_key(key: str | None) -> str:
    # Issues name config keys plainly ('learning_rate') or with a sub-path ('optimizer_config.eps').
    return (key or "").split(".")[0]


def _dataset_key(key: str | None) -> str:
    # Dataset issues are named '<dataset id>.<key>[.<sub key>]'.
    parts = (key or "").split(".")
    return parts[1] if len(parts) > 1 else ""
