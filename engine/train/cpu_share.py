"""How a CPU run shares the machine: its thread count follows the cores other programs leave free.

Why not one fixed setting: measured on 2 cores (tiny Sana, batch 4), torch's default (one thread
per core, OpenMP threads that spin while they wait) is the fastest on an idle machine but makes a
step 3.3-3.6x slower beside one busy process, because every parallel region waits for the thread
the other process pushed off its core. `OMP_WAIT_POLICY=PASSIVE` or one thread bring the
contended step to 1.0-1.7x but slow the idle one by 25-40%. So the thread count adapts: every few
seconds the engine reads how busy the CPUs it may use were (/proc/stat) minus its own CPU time,
and trains on the cores left (at least 1, at most torch's default), changing only when the same
answer came twice in a row. No library does this; torch only offers the knob (set_num_threads).

Fixed instead of adaptive when the user chose: `torch_num_threads` (SimpleTuner's key) or
`OMP_NUM_THREADS`, or `TUNER_CPU_THREADS=N`; `TUNER_CPU_THREADS=off` keeps torch's default count
(a CPU run whose numerics must not depend on the machine's load, as the test suite's). Several
processes on the CPU (gloo) and GPU runs keep the count the launcher or torch set. Thread counts change the order of
float sums, so a run whose thread count changed is not bit-identical to one whose did not.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable

import torch

INTERVAL_S = 2.0  # seconds between looks at the machine


def setup(cfg, device: torch.device, num_processes: int, say: Callable[[str], None]) -> "CpuShare | None":
    """Apply the run's thread setting; the adapter to tick once per step, or None when the count is fixed."""
    fixed = cfg.torch_num_threads or _env_threads()
    if fixed:  # on a GPU too: the CPU's share of the work (data, quantize_via cpu) runs on these threads
        torch.set_num_threads(fixed)
        return None
    if device.type != "cpu" or num_processes > 1:
        return None
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("TUNER_CPU_THREADS", "auto") == "off":
        return None
    cpus = _allowed_cpus()
    if cpus is None or torch.get_num_threads() < 2:
        return None  # nothing to read (not Linux) or nothing to lower
    return CpuShare(cpus, torch.get_num_threads(), say)


def _env_threads() -> int | None:
    value = os.environ.get("TUNER_CPU_THREADS", "auto")
    return int(value) if value.isdigit() and int(value) > 0 else None


def _allowed_cpus() -> list[str] | None:
    try:
        return [f"cpu{n}" for n in sorted(os.sched_getaffinity(0))] if os.path.exists("/proc/stat") else None
    except AttributeError:  # no sched_getaffinity off Linux
        return None


def busy_seconds(cpus: list[str], stat: str | None = None) -> float:
    """CPU seconds the given CPUs have spent on anything but idling, since boot (from /proc/stat)."""
    if stat is None:
        with open("/proc/stat") as f:
            stat = f.read()
    ticks = os.sysconf("SC_CLK_TCK")
    wanted, total = set(cpus), 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if name in wanted:
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(values) - values[3] - values[4]
    return total / ticks


def threads_for(cores: int, others_busy: float, most: int) -> int:
    """The threads that fit beside others' load: the free cores, rounded, within 1..most."""
    return max(1, min(most, math.floor(cores - others_busy + 0.5)))


class CpuShare:
    """Looks at the machine every INTERVAL_S and moves the thread count to what is free."""

    def __init__(self, cpus: list[str], most: int, say: Callable[[str], None]):
        self.cpus, self.most, self.say = cpus, most, say
        self.threads, self._pending = most, None
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        return time.monotonic(), busy_seconds(self.cpus), time.process_time()

    def tick(self) -> None:
        if time.monotonic() - self._last[0] < INTERVAL_S:
            return
        sample = self._sample()
        (t0, busy0, ours0), (t1, busy1, ours1) = self._last, sample
        self._last = sample
        others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (t1 - t0)
        self.decide(others)

    def decide(self, others_busy: float) -> None:
        """Take the count that fits `others_busy` cores of load, once it came twice in a row."""
        want = threads_for(len(self.cpus), others_busy, self.most)
        if want == self.threads:
            self._pending = None
            return
        if self._pending != want:
            self._pending = want  # a burst of someone else's work is not a reason to change yet
            return
        self._pending = None
        before, self.threads = self.threads, want
        torch.set_num_threads(want)
        self.say(f"other programs use about {others_busy:.1f} of this machine's {len(self.cpus)} CPUs: "
                 f"training on {want} thread{'s' if want > 1 else ''} (was {before}); set torch_num_threads "
                 "to fix the count")
