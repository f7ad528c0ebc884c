"""Putting a preset onto a config and its datasets, and checking a preset against the config model.

Precedence, lowest first: the base config (defaults, or the user's file) < the preset's keys <
the edits the user makes in the wizard afterwards (the wizard applies those after this). A key
the preset does not name keeps the base's value.
"""
from __future__ import annotations

import copy
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
    if kind not in PIXEL_DATASET_TYPES or out.get("disabled") is True:
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
    """The config model's issues with the preset's own keys (config and dataset overlays), as Issue objects."""
    from tuner.engine.config import parse_datasets, parse_train_config

    base = {"model_family": preset.model_family, "model_type": preset.model_type, **_PLACEHOLDER_BASE}
    config, datasets = apply_preset(preset, base, _PLACEHOLDER_DATASETS)
    own_config = {"model_family", "model_type", *preset.config}
    _, issues = parse_train_config(config, file=str(preset.path))
    found = [i for i in issues if _top_key(i.key) in own_config]
    _, dataset_issues = parse_datasets(datasets, file=str(preset.path))
    own_dataset = set(preset.dataset)
    found += [i for i in dataset_issues if _dataset_key(i.key) in own_dataset]
    return found


def _top_key(key: str | None) -> str:
    return (key or "").lstrip("-").split(".")[0].split("[")[0]


def _dataset_key(key: str | None) -> str:
    # Dataset issues may name a key as 'resolution', '[0].resolution' or 'id.video.num_frames'.
    parts = [p for p in (key or "").replace("[", ".").replace("]", "").split(".") if p and not p.isdigit()]
    for part in parts:
        if part in {"video", "resolution", "crop", "crop_aspect", "crop_style", "resolution_type",
                    "minimum_image_size", "maximum_image_size", "target_downsample_size", "repeats"}:
            return part
    return parts[-1] if parts else ""
