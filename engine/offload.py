"""Group offload through diffusers' hooks, for frozen modules only: a module's layers wait on the CPU
(or on disk) and are moved to the accelerator group by group, just before each group's forward.

What it offloads: the text encoder (Sana Video's Gemma2 while the caches fill, and for validation of
new prompts): inference only, the case diffusers designs the hooks for.

What it never offloads: the transformer being trained, whether full-rank or under an adapter.
diffusers' hooks swap each parameter's `.data` back to a CPU copy after its group's forward, so the
backward pass puts CUDA gradients on parameters that now live on the CPU and the optimizer step
fails (diffusers' own training test of it fails, and SimpleTuner removed the integration); with
streams, parameters added after the hooks (adapters, quantised layers) are missing from the
offload map. `training_warning` says so for `tuner check`, and the memory that works instead:
gradient checkpointing with a leaner optimizer, or an adapter on a quantised base.

- `group_offload_use_stream` overlaps the copies with compute and needs CUDA streams; elsewhere
  it is ignored with a warning.
- `group_offload_to_disk_path` keeps offloaded weights in safetensors files instead of RAM
  (written once per run, which only a frozen module allows).
"""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `tuner check` reads training_warning torch-free
    import torch

    from tuner.engine.config import TrainConfig

_HOOKS = ("group_offloading", "lazy_prefetch_group_offloading")


def training_warning(cfg: TrainConfig) -> str | None:
    """What `tuner check` says about enable_group_offload: the trained transformer stays on the GPU (None: off)."""
    if not cfg.enable_group_offload:
        return None
    text = ("the frozen text encoder is offloaded while the caches fill" if cfg.family.video
            else "nothing is offloaded for this family")
    return (f"only frozen modules can be group-offloaded, so the transformer being trained stays on the GPU "
            f"({text}): diffusers' hooks move each group's weights back to the CPU after its forward, which the "
            "backward pass and optimizer cannot follow. To save memory instead, keep gradient_checkpointing: true "
            "and pick a leaner optimizer (optimi-lion: one Kahan-compensated state), fewer frames or a smaller "
            "resolution, or train an adapter on a quantised base (lora_type: lycoris, base_model_precision: "
            "int8-quanto); set enable_group_offload: false to silence this")


def settings(cfg: TrainConfig, device: torch.device, name: str = "module") -> dict[str, Any]:
    """Keyword arguments for diffusers' apply_group_offloading from the config's group_offload_* keys."""
    import torch

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
    if disk:
        # Files from an earlier run would be reloaded as they are: start each module's folder empty.
        folder = Path(disk).expanduser() / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        kwargs["offload_to_disk_path"] = str(folder)
    return kwargs


def apply(module: torch.nn.Module, cfg: TrainConfig, device: torch.device, name: str = "module") -> torch.nn.Module:
    """Put the frozen `module` under group offload as the config says; returns it (hooks are added in place).

    A module with trainable parameters is refused (see the module docstring)."""
    from diffusers.hooks import apply_group_offloading

    if is_offloaded(module):
        return module
    if cfg.enable_model_cpu_offload:
        # config_rules refuses the pair before anything loads; this guards direct callers.
        raise ValueError("enable_group_offload cannot be combined with enable_model_cpu_offload; set one to false")
    trained = [n for n, p in module.named_parameters() if p.requires_grad]
    if trained:
        raise ValueError(f"group offload is for frozen modules only; {name} trains {len(trained)} parameter(s) "
                         f"(e.g. {trained[0]}): diffusers' hooks would move them to the CPU between forward and "
                         "backward. Set enable_group_offload: false")
    apply_group_offloading(module, **settings(cfg, device, name))
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
