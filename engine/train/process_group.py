"""The run's accelerate Accelerator, with a process-group timeout long enough for the main process's solo work.

Only the main process encodes the caches and samples validation images or videos while the others
wait at a barrier; NCCL's watchdog ends any collective that waits longer than the group's timeout
(10 minutes by default), which a first run on a real dataset or one 81-frame validation video
exceeds. process_group_timeout_minutes sets the timeout for every collective of the run (gloo's
CPU groups too).
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The Accelerator for `cfg`: its mixed precision, the process-group timeout, gloo when several processes have no CUDA."""
    # Several processes without CUDA (torchrun / `accelerate launch --multi_gpu` on a CPU machine):
    # accelerate joins them with gloo only when told this is a CPU run.
    # NVML (the daemon's claims, the memory readings, tuner check) numbers GPUs by PCI bus, CUDA fastest
    # first unless told: set before CUDA starts (is_available below), so CUDA_VISIBLE_DEVICES=1 is one card.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    cpu_group = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    timeout = InitProcessGroupKwargs(timeout=timedelta(minutes=float(cfg.process_group_timeout_minutes)))
    # dynamo_backend "no": the engine compiles the transformer itself, in place (train/compiled.py); an
    # accelerate config's ACCELERATE_DYNAMO_BACKEND would compile it a second time, wrapped and renamed.
    return Accelerator(cpu=cpu_group, mixed_precision="fp16" if cfg.mixed_precision == "fp16" else "no",
                       dynamo_backend="no", kwargs_handlers=[timeout])
