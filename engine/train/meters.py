"""Speed, ETA and memory readings for progress events, reported at a steady pace."""
from __future__ import annotations

import time
from typing import Any

import psutil
import torch

REPORT_EVERY_S = 0.5
MEMORY_EVERY_S = 5.0


class Meters:
    """Tracks step times and decides when a progress or memory event is due."""

    def __init__(self, total_steps: int, start_step: int, batch_size: int):
        self.total = total_steps
        self.start_step = start_step
        self.batch_size = batch_size
        self.started = time.perf_counter()
        self.last_step_time = self.started
        self.step_seconds: float | None = None
        self.durations: list[float] = []  # every optimizer step's wall time (benchmarks read it)
        self.last_report = 0.0
        self.last_memory = 0.0
        self.process = psutil.Process()

    def step_done(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        elapsed = now - self.last_step_time
        self.last_step_time = now
        self.durations.append(elapsed)
        # Smoothed so one slow step (a checkpoint, a validation) does not swing the ETA.
        self.step_seconds = elapsed if self.step_seconds is None else 0.9 * self.step_seconds + 0.1 * elapsed

    def should_report(self, step: int) -> bool:
        now = time.perf_counter()
        if step >= self.total or step == self.start_step + 1 or now - self.last_report >= REPORT_EVERY_S:
            self.last_report = now
            return True
        return False

    def should_report_memory(self) -> bool:
        now = time.perf_counter()
        if now - self.last_memory >= MEMORY_EVERY_S:
            self.last_memory = now
            return True
        return False

    def rates(self, step: int) -> dict[str, Any]:
        per_step = self.step_seconds or 0.0
        steps_per_s = 1.0 / per_step if per_step else 0.0
        return {
            "steps_per_s": round(steps_per_s, 3),
            "samples_per_s": round(steps_per_s * self.batch_size, 3),
            "eta_s": round((self.total - step) * per_step, 1),
            "elapsed_s": round(time.perf_counter() - self.started, 1),
        }

    def memory(self, per_process: list[list[float]] | None, names: list[str]) -> dict[str, Any]:
        """The memory event: one entry per process's GPU (`per_process` rows of device_counters, gathered
        in process order, `names` the GPUs' names likewise; none without CUDA) and this process's RSS."""
        devices = [{"name": name, "allocated": int(allocated), "reserved": int(reserved), "peak": int(peak)}
                   for name, (allocated, reserved, peak) in zip(names, per_process or [])]
        return {"devices": devices, "rss": self.process.memory_info().rss}


def device_counters(device: torch.device) -> torch.Tensor:
    """This process's [allocated, reserved, peak] bytes on its own GPU (zeros without CUDA), as float64 on
    `device`: the loop gathers them with the step's loss, since a process's allocator knows only its own GPU."""
    if device.type != "cuda":
        return torch.zeros(3, dtype=torch.float64, device=device)
    counters = [torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device),
                torch.cuda.max_memory_allocated(device)]
    return torch.tensor(counters, dtype=torch.float64).to(device, non_blocking=True)


def device_names(accelerator: Any) -> list[str]:
    """Every process's GPU name in process order (a collective: every process calls it); [] without CUDA."""
    if accelerator.device.type != "cuda":
        return []
    from accelerate.utils import gather_object

    return gather_object([torch.cuda.get_device_name(accelerator.device)])
