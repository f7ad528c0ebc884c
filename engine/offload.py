"""Group offload through diffusers' hooks: a module's layers wait on the CPU (or on disk) and are
moved to the accelerator group by group, just before each group's forward pass.

What it offloads, and when:
- Text encoders (caching, and validation of new prompts): inference only, the case diffusers
  designs the hooks for.
- The transformer, for training and for validation sampling, as SimpleTuner does: each group's
  weights are onloaded before its forward and offloaded after it. Gradients and optimizer states
  are not offloaded; they stay where the optimizer keeps them. Whether the backward pass finds
  every weight where it needs it on a CUDA device is up to diffusers' hooks and is not checked by
  tuner's tests, which run on the CPU (cpu → cpu: the hooks run, nothing moves).
- `group_offload_use_stream` overlaps the copies with compute and needs CUDA streams; elsewhere
  it is ignored with a warning.
- `group_offload_to_disk_path` keeps offloaded weights in safetensors files instead of RAM, for
  frozen modules only: diffusers writes a group's file once and reloads that file on every
  onload, which would silently undo every optimizer update of a trained module. The trained
  transformer is therefore offloaded to RAM, with a warning, when a disk path is set.
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

_HOOKS = ("group_offloading", "lazy_prefetch_group_offloading")


def settings(cfg: TrainConfig, device: torch.device, name: str = "module", trained: bool = False) -> dict[str, Any]:
    """Keyword arguments for diffusers' apply_group_offloading from the config's group_offload_* keys."""
    device = torch.device(device)
    kind = cfg.group_offload_type
    if kind not in ("block_level", "leaf_level"):
        raise ValueError(f"config.json: group_offload_type {kind!r} is not block_level or leaf_level")
    kwargs: dict[str, Any] = {"onload_device": device, "offload_device": torch.device("cpu"), "offload_type": kind}
    if kind == "block_level":
        kwargs["num_blocks_per_group"] = int(cfg.group_offload_blocks_per_group)
    if cfg.group_offload_use_stream:
        if device.type == "cuda" and torch.cuda.is_available():
            kwargs["use_stream"] = True
        else:
            warnings.warn(f"group_offload_use_stream ignored: CUDA streams are not available on {device}",
                          stacklevel=2)
    disk = cfg.group_offload_to_disk_path
    if disk and trained:
        warnings.warn(f"group_offload_to_disk_path: the trained {name} is offloaded to RAM instead (diffusers "
                      "reloads a group's file written once, which would undo training updates)", stacklevel=2)
    elif disk:
        # Files from an earlier run would be reloaded as they are: start each module's folder empty.
        folder = Path(disk).expanduser() / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        kwargs["offload_to_disk_path"] = str(folder)
    return kwargs


def apply(module: torch.nn.Module, cfg: TrainConfig, device: torch.device, name: str = "module",
          trained: bool = False) -> torch.nn.Module:
    """Put `module` under group offload as the config says; returns it (hooks are added in place)."""
    from diffusers.hooks import apply_group_offloading

    if is_offloaded(module):
        return module
    if cfg.enable_model_cpu_offload:
        # config_rules refuses the pair before anything loads; this guards direct callers.
        raise ValueError("enable_group_offload cannot be combined with enable_model_cpu_offload; set one to false")
    apply_group_offloading(module, **settings(cfg, device, name, trained))
    return module


def is_offloaded(module: torch.nn.Module) -> bool:
    """Whether diffusers' group offload hooks are on `module`."""
    registry = getattr(module, "_diffusers_hook", None)
    return registry is not None and registry.get_hook(_HOOKS[0]) is not None


def remove(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Take the hooks off again and put every weight on `device` (e.g. before exporting on one device)."""
    from diffusers.hooks import HookRegistry

    if is_offloaded(module):
        registry = HookRegistry.check_if_exists_or_initialize(module)
        for name in _HOOKS:
            registry.remove_hook(name, recurse=True)
    return module.to(device)
