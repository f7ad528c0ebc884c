"""A rich live view of a job's event stream: state, progress, loss, lr, speed, ETA, memory, the
latest preview and validation files, the last log lines. Torch-free: `tuner train` feeds it the
engine's events directly, `tunerd attach` the daemon's subscription messages."""
from __future__ import annotations

from collections import deque
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def _size(n: float | None) -> str:
    if not isinstance(n, (int, float)) or n <= 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _duration(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


class LiveView:
    """Folds events into the state a person watching a run wants to see."""

    def __init__(self, title: str = "tuner", subtitle: str | None = None, log_lines: int = 8):
        self.title = title
        self.subtitle = subtitle
        self.job_state: str | None = None   # from the daemon; None when training in this process
        self.reason = ""
        self.phase = "starting"
        self.message = ""
        self.progress: dict[str, Any] = {}
        self.memory: dict[str, Any] = {}
        self.gpu_memory: list[dict[str, Any]] = []
        self.preview: str | None = None
        self.validation: list[str] = []
        self.checkpoint: str | None = None
        self.logs: deque[str] = deque(maxlen=log_lines)
        self.cache: dict[str, Any] = {}
        self.error: str | None = None

    def feed_message(self, message: dict[str, Any]) -> None:
        """One message of a tunerd subscription (engine or daemon stream, or the end)."""
        if message.get("end"):
            job = message.get("job") or {}
            self.job_state, self.reason = job.get("state", self.job_state), job.get("reason", "")
            return
        event = message.get("event") or {}
        if message.get("stream") == "daemon":
            if event.get("type") == "status":
                self.job_state, self.reason = event.get("job_state", self.job_state), event.get("reason", "")
            elif event.get("type") == "memory":
                self.gpu_memory = event.get("devices") or []
            return
        self.feed(event)

    def feed(self, event: dict[str, Any]) -> None:
        """One engine event (a line of events.jsonl)."""
        kind = event.get("type")
        if kind == "status":
            self.phase = event.get("phase", self.phase)
            self.message = event.get("message") or ""
        elif kind == "progress":
            self.progress = event
            if self.phase == "training":
                self.message = ""  # "step 0 of N" from the start of the phase is stale now
        elif kind == "memory":
            self.memory = event
        elif kind == "cache":
            self.cache = event
        elif kind == "preview":
            self.preview = f"{event.get('path')}  ({event.get('k')}/{event.get('n')})"
        elif kind == "validation":
            self.validation = [str(p) for p in (event.get("paths") or [])][-3:]
        elif kind == "checkpoint":
            self.checkpoint = f"step {event.get('step')}: {event.get('path')}"
        elif kind == "log":
            self.logs.append(f"{event.get('level', 'info')}: {event.get('message', '')}")
        elif kind == "error":
            self.error = event.get("message")
            self.logs.append(f"error: {self.error}")
        elif kind == "done":
            self.logs.append(f"done: pipeline in {(event.get('paths') or {}).get('pipeline')}")

    def __rich__(self) -> Panel:
        p = self.progress
        step, total = p.get("step") or 0, p.get("total") or 0
        # The daemon's job state leads when it says more than the engine's phase.
        state = [(self.job_state, "bold"), "  "] if self.job_state and self.job_state != self.phase else []
        reason = [("  " + self.reason, "dim")] if self.reason and self.reason not in (self.message or "") else []
        head = Text.assemble(*state, (self.phase, "bold cyan"), "  ", self.message or "", *reason)
        bar = Table.grid(expand=True)
        bar.add_column(ratio=1)
        bar.add_column(justify="right")
        bar.add_row(ProgressBar(total=max(total, 1), completed=step), f" {step}/{total}")
        stats = Table.grid(padding=(0, 2))
        stats.add_row("loss", _number(p.get("loss"), ".4f"), "lr", _number(p.get("lr"), ".2e"))
        stats.add_row("speed", f"{_number(p.get('steps_per_s'), '.2f')} it/s, {_number(p.get('samples_per_s'), '.1f')} img/s",
                      "ETA", _duration(p.get("eta_s")))
        stats.add_row("epoch", str(p.get("epoch", "-")), "RSS", _size(self.memory.get("rss")))
        for dev in self.memory.get("devices") or []:
            stats.add_row(str(dev.get("name", "gpu")), f"{_size(dev.get('allocated'))} allocated",
                          "peak", _size(dev.get("peak")))
        for dev in self.gpu_memory:
            stats.add_row(f"GPU {dev.get('device', '')} {dev.get('name', '')}", f"{_size(dev.get('used'))} used",
                          "of", _size(dev.get("total")))
        if self.phase == "caching" and self.cache:
            stats.add_row("cache", f"{self.cache.get('dataset')} {self.cache.get('kind')}",
                          "", f"{self.cache.get('done')}/{self.cache.get('total')}")
        files = Table.grid(padding=(0, 2))
        files.add_column(style="dim")
        files.add_column()
        if self.preview:
            files.add_row("preview", self.preview)
        for path in self.validation:
            files.add_row("validation", path)
        if self.checkpoint:
            files.add_row("checkpoint", self.checkpoint)
        logs = Text("\n".join(self.logs), style="dim")
        return Panel(Group(head, bar, stats, files, logs), title=self.title, subtitle=self.subtitle,
                     border_style="red" if self.error else "cyan")
