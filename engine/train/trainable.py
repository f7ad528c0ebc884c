"""What trains and what is exported: the whole denoiser (full-rank) or an adapter on a frozen,
possibly quantised base. The loop calls `prepare` once after loading and `export` at the end."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tuner.engine import adapters
from tuner.engine.quantize import ignore_in_ddp, is_quantised, quantize_model

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig
    from tuner.engine.models.base import ModelFamily


def prepare(model: torch.nn.Module, cfg: TrainConfig, family: ModelFamily) -> torch.nn.Module:
    """Make `model` ready to train as cfg.model_type says; returns the module the loop trains."""
    if cfg.model_type == "full":
        if is_quantised(cfg.base_model_precision):
            raise ValueError(f"config.json: base_model_precision: {cfg.base_model_precision} cannot be trained "
                             "full-rank; set base_model_precision: no_change, or model_type: lora")
        model.requires_grad_(True)
        return model
    if cfg.model_type != "lora":
        raise ValueError(f"config.json: model_type: {cfg.model_type!r}; use full or lora")
    # The families' load_transformer has quantised the base already (on its way to the device, load_denoiser);
    # then this only moves it. A family that loads it plainly gets it quantised here.
    model = quantize_model(model, cfg.base_model_precision, device=family.device, via=cfg.quantize_via)
    dtype = family.weight_dtype
    if cfg.lora_type == "lycoris":
        # load_bundle has already made lycoris_config an absolute path.
        adapters.add_lokr(model, adapters.read_lycoris_config(cfg.lycoris_config), dtype=dtype)
    else:
        adapters.add_lora(model, cfg, family.name)
        for name, param in model.named_parameters():
            if param.requires_grad and param.dtype != dtype:
                param.data = param.data.to(dtype)
    # Named once the adapters are in (peft renames a wrapped layer's weight to base_layer.weight).
    ignore_in_ddp(model)
    return model


def export(model: torch.nn.Module, cfg: TrainConfig, family: ModelFamily, folder: Path) -> Path:
    """Write the result users load: a diffusers pipeline folder (full-rank) or the adapter files."""
    if cfg.model_type == "full":
        family.save_pipeline(model, folder)
    elif cfg.lora_type == "lycoris":
        adapters.save_lokr(model, folder)
    else:
        adapters.export_lora(model, family.pipeline_class, folder)
    return folder


def prior_target(model: torch.nn.Module, family: ModelFamily, noisy: torch.Tensor, sigmas: torch.Tensor,
                 text: dict[str, torch.Tensor], target: torch.Tensor, regularisation: torch.Tensor) -> torch.Tensor:
    """Prior preservation for adapters: on regularisation samples the target is the frozen base
    model's own prediction (adapters off), so the adapter learns to leave those images alone."""
    with torch.no_grad(), adapters.adapters_off(model):
        base = family.predict(model, noisy, sigmas, text)
    mask = regularisation.view(-1, *([1] * (target.ndim - 1)))
    return torch.where(mask, base.to(target.dtype), target)
