"""torch.compile for the transformer (SimpleTuner's dynamo_* keys) and the TF32 switch.

Regional compilation (the default) compiles each repeated transformer block (the family card's
`blocks`) in place with `nn.Module.compile`: every block has the same code, so the compiler
builds one graph and reuses it, which is what diffusers' `compile_repeated_blocks` does (the
diffusers models here do not name their blocks for it, the cards do). Compiling in place keeps
the module tree and its parameter names, so checkpoints, adapters, EMA and the export see the
same model as an eager run; accelerate's `compile_regions` would wrap the blocks in new modules
and rename every weight.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def use_tf32(cfg: Any, device: torch.device) -> None:
    """TF32 matmuls and convolutions on NVIDIA GPUs unless disable_tf32 (fp32 math at about bf16 speed)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not cfg.disable_tf32
        torch.backends.cudnn.allow_tf32 = not cfg.disable_tf32


def compile_model(model: nn.Module, cfg: Any) -> str | None:
    """Compile `model` in place as dynamo_* asks; returns what was done, for the log (None: eager)."""
    if cfg.dynamo_backend == "no":
        return None
    options = {"backend": cfg.dynamo_backend, "fullgraph": cfg.dynamo_fullgraph, "dynamic": cfg.dynamo_dynamic}
    if cfg.dynamo_mode:
        options["mode"] = cfg.dynamo_mode
    how = f"backend {cfg.dynamo_backend}" + (f", mode {cfg.dynamo_mode}" if cfg.dynamo_mode else "")
    names = set(cfg.family.blocks)
    # By any class in the module's MRO: FSDP2 turns a SanaTransformerBlock into an FSDPSanaTransformerBlock.
    blocks = [m for m in model.modules() if any(c.__name__ in names for c in type(m).__mro__)] \
        if cfg.dynamo_use_regional_compilation else []
    if blocks:
        for block in blocks:
            block.compile(**options)
        return (f"compiling {len(blocks)} {'/'.join(sorted(names))} blocks ({how}) on the first step: one graph "
                "for all of them (dynamo_use_regional_compilation)")
    model.compile(**options)
    return f"compiling the whole transformer ({how}) on the first step"
