"""A rich live view of a job's event stream: progress, loss, lr, speed, ETA, memory, the latest
preview and validation files, the last log lines. Torch-free: `tuner train` and `tunerd attach`
both feed it events."""
from __future__ import annotations

from collections import deque
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def _size(n: float | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LiveView:
    """Folds events into the state a person watching a run wants to see."""

    def __init__(self, title: str = "tuner", log_lines: int = 6):
        self.title = title
        self.phase = "starting"
        self.message = ""
        self.progress: dict[str, Any] = {}
        self.memory: dict[str, Any] = {}
        self.preview: str | None = None
        self.validation: list[str] = []
        self.checkpoint: str | None = None
        self.logs: deque[str] = deque(maxlen=log_lines)
        self.cache: dict[str, Any] = {}
        self.error: str | None = None
        self.last_seq = 0

    def feed(self, event: dict[str, Any]) -> None:
        self.last_seq = max(self.last_seq, int(event.get("seq", 0)))
        kind = event.get("type")
        if kind == "status":
            self.phase = event.get("phase", self.phase)
            self.message = event.get("message") or ""
        elif kind == "progress":
            self.progress = event
        elif kind == "memory":
            self.memory = event
        elif kind == "cache":
            self.cache = event
        elif kind == "preview":
            self.preview = event.get("path")
        elif kind == "validation":
            self.validation = (event.get("paths") or [])[-3:]
        elif kind == "checkpoint":
            self.checkpoint = event.get("path")
            self.logs.append(f"checkpoint at step {event.get('step')}: {self.checkpoint}")
        elif kind == "log":
            self.logs.append(f"[{event.get('level', 'info')}] {event.get('message', '')}")
        elif kind == "error":
            self.error = event.get("message")
            self.logs.append(f"[error] {self.error}")
        elif kind == "done":
            self.logs.append(f"done: pipeline in {(event.get('paths') or {}).get('pipeline')}")

    def __rich__(self) -> Panel:
        p = self.progress
        step, total = p.get("step", 0), p.get("total", 0)
        head = Text.assemble((f"{self.phase}", "bold cyan"), "  ", self.message)
        bar = Table.grid(expand=True)
        bar.add_column(ratio=1)
        bar.add_column(justify="right")
        bar.add_row(ProgressBar(total=max(total, 1), completed=step), f" {step}/{total}")
        stats = Table.grid(padding=(0, 2))
        for _ in range(4):
            stats.add_column()
        loss = p.get("loss")
        stats.add_row("loss", f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                      "lr", f"{p['lr']:.2e}" if isinstance(p.get("lr"), (int, float)) else "-")
        stats.add_row("speed", f"{p.get('steps_per_s', 0):.2f} it/s, {p.get('samples_per_s', 0):.1f} img/s" if p else "-",
                      "ETA", _duration(p.get("eta_s")) if p else "-")
        stats.add_row("epoch", str(p.get("epoch", "-")), "RSS", _size(self.memory.get("rss")))
        for dev in self.memory.get("devices") or []:
            stats.add_row(dev.get("name", "gpu"), f"{_size(dev.get('allocated'))} alloc",
                          "peak", _size(dev.get("peak")))
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
        return Panel(Group(head, bar, stats, files, logs), title=self.title, border_style="red" if self.error else "cyan")
