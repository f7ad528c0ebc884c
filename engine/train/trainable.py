"""What trains and what is exported: the whole denoiser (full-rank) or an adapter on a frozen,
possibly quantised base. The loop calls `prepare` once after loading and `export` at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def prepare(model: torch.nn.Module, cfg: Any, family: Any) -> torch.nn.Module:
    """Make `model` ready to train as cfg.model_type says; returns the module the loop trains."""
    if cfg.model_type == "full":
        model.requires_grad_(True)
        return model
    raise NotImplementedError(f"config.json: model_type: {cfg.model_type!r} training is not implemented yet")


def export(model: torch.nn.Module, cfg: Any, family: Any, folder: Path) -> Path:
    """Write the result users load: a diffusers pipeline folder (full-rank)."""
    family.save_pipeline(model, folder)
    return folder
