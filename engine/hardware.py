"""What this machine can train with: GPUs (through NVML), CPUs, RAM and free disk; torch-free.

Sizes are in GiB (bytes / 1024**3), the unit nvidia-smi's MiB figures divide into, so a "24 GB"
card reports about 23.99 here. `tuner.presets.rank_presets` allows for that rounding.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import psutil

GIB = 1024**3

# bf16 arithmetic arrived with Ampere (compute capability 8.0); older cards emulate it slowly or
# not at all, so a bf16 preset on them trains badly or fails.
BF16_MIN_CAPABILITY = (8, 0)


def _gib(n_bytes: float) -> float:
    return round(n_bytes / GIB, 2)


def _visible_filter() -> tuple[list[str] | None, str | None]:
    """CUDA_VISIBLE_DEVICES as a list of indices/UUIDs, or None when unset (NVML ignores it)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None, None
    items = [s.strip() for s in raw.split(",") if s.strip()]
    return items, f"CUDA_VISIBLE_DEVICES={raw!r}: only those GPUs are listed"


def _probe_gpus(notes: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """The NVIDIA GPUs NVML sees (filtered by CUDA_VISIBLE_DEVICES) and the driver version."""
    try:
        import pynvml
    except ImportError:
        notes.append("nvidia-ml-py is not installed, so GPUs were not probed (pip install nvidia-ml-py)")
        return [], None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        # No driver or no NVIDIA GPU: the normal case on laptops, Macs and CI.
        notes.append(f"no NVIDIA GPU found (NVML: {exc}); training would run on the CPU")
        if platform.system() == "Darwin" and platform.machine() == "arm64":
            notes.append("Apple GPUs (MPS) are not probed; the presets are sized for NVIDIA cards")
        return [], None
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        visible, visible_note = _visible_filter()
        if visible_note:
            notes.append(visible_note)
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            if visible is not None and not _is_visible(pynvml, handle, index, visible):
                continue
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append({
                "index": index,
                "name": _text(pynvml.nvmlDeviceGetName(handle)),
                "vram_total_gb": _gib(memory.total),
                "vram_free_gb": _gib(memory.free),
                "compute_capability": [int(major), int(minor)],
                "bf16": (int(major), int(minor)) >= BF16_MIN_CAPABILITY,
            })
        if not gpus:
            notes.append("NVML works but lists no usable GPU; training would run on the CPU")
        elif not all(g["bf16"] for g in gpus):
            notes.append("a GPU below compute capability 8.0 has no bf16: bf16 presets will not fit it")
        return gpus, driver
    except pynvml.NVMLError as exc:
        notes.append(f"NVML failed while reading the GPUs ({exc}); GPUs are not listed")
        return [], None
    finally:
        pynvml.nvmlShutdown()


def _is_visible(pynvml: Any, handle: Any, index: int, visible: list[str]) -> bool:
    if str(index) in visible:
        return True
    # CUDA_VISIBLE_DEVICES may name GPUs by UUID (GPU-xxxx, or a unique prefix of it).
    uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
    return any(item.startswith("GPU-") and uuid.startswith(item) for item in visible)


def _text(value: bytes | str) -> str:
    # Older nvidia-ml-py releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else str(value)


def _existing_parent(path: str | os.PathLike) -> Path:
    """The path itself or its nearest existing parent, so an output_dir not made yet still measures."""
    p = Path(path).expanduser().resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _usable_cpus() -> int:
    # Containers and taskset limit the CPUs a process may use; os.cpu_count() ignores that.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def probe(path: str | os.PathLike = ".") -> dict[str, Any]:
    """This machine's GPUs, CPUs, RAM and the free disk under `path`, as a JSON-ready dict."""
    notes: list[str] = []
    gpus, driver = _probe_gpus(notes)
    memory = psutil.virtual_memory()
    disk_path = _existing_parent(path)
    disk = shutil.disk_usage(disk_path)
    return {
        "gpus": gpus,
        "cpu_count": _usable_cpus(),
        "ram_total_gb": _gib(memory.total),
        "ram_available_gb": _gib(memory.available),
        "disk_free_gb": _gib(disk.free),
        "disk_path": str(disk_path),
        "platform": platform.platform(),
        "nvidia_driver": driver,
        "notes": notes,
    }


def describe(vram_gb: float, gpus: int, bf16: bool = True) -> dict[str, Any]:
    """A planned machine with `gpus` idle GPUs of `vram_gb` each, in probe()'s shape (RAM, disk unknown)."""
    # Ampere (8.6) stands in for a bf16 card, Turing (7.5) for one without.
    capability = [8, 6] if bf16 else [7, 5]
    return {
        "gpus": [
            {
                "index": i,
                "name": f"planned {vram_gb:g} GB GPU",
                "vram_total_gb": float(vram_gb),
                "vram_free_gb": float(vram_gb),
                "compute_capability": capability,
                "bf16": bf16,
            }
            for i in range(gpus)
        ],
        "cpu_count": None,
        "ram_total_gb": None,
        "ram_available_gb": None,
        "disk_free_gb": None,
        "disk_path": None,
        "platform": "planned",
        "nvidia_driver": None,
        "notes": [f"planned hardware: {gpus} × {vram_gb:g} GB{'' if bf16 else ', no bf16'}; RAM and disk not known"],
    }


def command(args: Any) -> int:
    """`tuner hardware [--path P] [--json]`: print what this machine has."""
    hw = probe(getattr(args, "path", ".") or ".")
    if getattr(args, "json", False):
        print(json.dumps(hw, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if hw["gpus"]:
        table = Table(title=f"GPUs (driver {hw['nvidia_driver']})")
        for col in ("#", "name", "VRAM free / total (GB)", "compute", "bf16"):
            table.add_column(col)
        for g in hw["gpus"]:
            cc = g["compute_capability"]
            table.add_row(
                str(g["index"]), g["name"], f"{g['vram_free_gb']:.1f} / {g['vram_total_gb']:.1f}",
                f"{cc[0]}.{cc[1]}", "yes" if g["bf16"] else "no",
            )
        console.print(table)
    else:
        console.print("[bold]No NVIDIA GPU[/bold]")
    console.print(
        f"CPUs: {hw['cpu_count']}   RAM: {hw['ram_available_gb']:.1f} of {hw['ram_total_gb']:.1f} GB available   "
        f"disk: {hw['disk_free_gb']:.1f} GB free at {hw['disk_path']}"
    )
    console.print(f"platform: {hw['platform']}")
    for note in hw["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    return 0
