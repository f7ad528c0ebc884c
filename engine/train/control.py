"""Requests from outside a running job (stop, save now, sample now), decided on rank 0 and
followed by every rank at the same step."""
from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast

from tuner.engine.jobdir import CONTROL_REQUESTS, clear_request, pending_requests


class Control:
    """Reads the job directory's control/ folder between optimizer steps."""

    def __init__(self, job_dir: Path | None):
        self.job_dir = job_dir

    def poll(self, accelerator: Accelerator) -> set[str]:
        """The requests to act on at this step (the same set on every process)."""
        flags = torch.zeros(len(CONTROL_REQUESTS), dtype=torch.int64, device=accelerator.device)
        if accelerator.is_main_process and self.job_dir is not None:
            for name in pending_requests(self.job_dir):
                flags[CONTROL_REQUESTS.index(name)] = 1
                clear_request(self.job_dir, name)
        if accelerator.num_processes > 1:
            flags = broadcast(flags, from_process=0)
        return {name for name, flag in zip(CONTROL_REQUESTS, flags.tolist()) if flag}
