"""The GPUs this daemon may hand out, and GPU-wide memory readings through NVML."""
from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("tunerd.gpu")


def _nvml():
    """pynvml, initialised; None on machines without an NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        log.info("nvidia-ml-py is not installed; jobs run on the CPU, one at a time")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        log.info("no NVIDIA GPUs (NVML: %s); jobs run on the CPU, one at a time", e)
        return None
    return pynvml


def detect_gpus() -> list[str]:
    """GPU ids to hand out: the daemon's own CUDA_VISIBLE_DEVICES if set, else all NVML sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    nvml = _nvml()
    if nvml is None:
        return []
    return [str(i) for i in range(nvml.nvmlDeviceGetCount())]


class MemoryReader:
    """Reads used/total memory of GPUs by id; does nothing where NVML is missing."""

    def __init__(self) -> None:
        self.nvml = _nvml()

    def read(self, devices: list[str]) -> list[dict[str, Any]]:
        if self.nvml is None:
            return []
        readings = []
        for device in devices:
            try:
                if device.isdigit():
                    handle = self.nvml.nvmlDeviceGetHandleByIndex(int(device))
                else:
                    handle = self.nvml.nvmlDeviceGetHandleByUUID(device)
                info = self.nvml.nvmlDeviceGetMemoryInfo(handle)
                name = self.nvml.nvmlDeviceGetName(handle)
            except self.nvml.NVMLError as e:
                log.warning("NVML cannot read GPU %s: %s", device, e)
                continue
            readings.append({"device": device, "name": name if isinstance(name, str) else name.decode(),
                             "used": int(info.used), "total": int(info.total)})
        return readings
