"""`tunerd attach`: a rich live view of one job's stream; Ctrl-C detaches and the job goes on."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tuner.daemon.client import follow


def _bytes(n: float | None) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, (int, float)) else "-"


def _duration(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class JobView:
    """What the view shows, folded from the job's events; rendered by rich on each refresh."""

    def __init__(self, job: str):
        self.job = job
        self.state = "?"
        self.reason = ""
        self.phase = "-"
        self.progress: dict[str, Any] = {}
        self.engine_memory: list[dict[str, Any]] = []
        self.gpu_memory: list[dict[str, Any]] = []
        self.preview = "-"
        self.validation = "-"
        self.checkpoint = "-"
        self.lines: deque[str] = deque(maxlen=8)

    def feed(self, message: dict[str, Any]) -> None:
        if message.get("end"):
            self.state = message["job"]["state"]
            self.reason = message["job"].get("reason", "")
            return
        event, stream = message["event"], message["stream"]
        kind = event.get("type")
        if stream == "daemon":
            if kind == "status":
                self.state, self.reason = event.get("job_state", self.state), event.get("reason", "")
            elif kind == "memory":
                self.gpu_memory = event.get("devices", [])
            return
        if kind == "status":
            self.phase = event.get("phase", self.phase)
            self.lines.append(f"phase: {self.phase}" + (f" — {event['message']}" if event.get("message") else ""))
        elif kind == "progress":
            self.progress = event
        elif kind == "memory":
            self.engine_memory = event.get("devices", [])
        elif kind == "preview":
            self.preview = f"{event.get('path')}  ({event.get('k')}/{event.get('n')}, {event.get('nickname') or ''})"
        elif kind == "validation":
            paths = event.get("paths") or []
            self.validation = f"step {event.get('step')}: " + ", ".join(map(str, paths[:3]))
        elif kind == "checkpoint":
            self.checkpoint = f"step {event.get('step')}: {event.get('path')}"
        elif kind in ("log", "error"):
            level = event.get("level", "error")
            self.lines.append(f"{level}: {event.get('message')}")
        elif kind == "cache":
            self.lines.append(f"caching {event.get('dataset')} {event.get('kind')}: {event.get('done')}/{event.get('total')}")

    def __rich__(self) -> Panel:
        pr = self.progress
        step, total = pr.get("step") or 0, pr.get("total") or 0
        head = Table.grid(padding=(0, 2))
        head.add_row(Text(self.state, style="bold"), f"phase {self.phase}", Text(self.reason, style="dim"))
        bar = ProgressBar(total=max(total, 1), completed=step, width=50)
        stats = Table.grid(padding=(0, 2))
        loss, lr, speed = pr.get("loss"), pr.get("lr"), pr.get("steps_per_s")
        stats.add_row(f"step {step}/{total}", f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "loss -",
                      f"lr {lr:.2e}" if isinstance(lr, (int, float)) else "lr -",
                      f"{speed:.2f} it/s" if isinstance(speed, (int, float)) else "- it/s",
                      f"ETA {_duration(pr.get('eta_s'))}")
        memory = Table.grid(padding=(0, 2))
        for d in self.engine_memory:
            memory.add_row(str(d.get("name", "?")), f"allocated {_bytes(d.get('allocated'))}",
                           f"reserved {_bytes(d.get('reserved'))}", f"peak {_bytes(d.get('peak'))}")
        for d in self.gpu_memory:
            memory.add_row(f"GPU {d.get('device')} {d.get('name', '')}", f"used {_bytes(d.get('used'))}",
                           f"of {_bytes(d.get('total'))}", "")
        files = Table.grid(padding=(0, 2))
        files.add_row("preview", self.preview)
        files.add_row("validation", self.validation)
        files.add_row("checkpoint", self.checkpoint)
        log = Text("\n".join(self.lines), style="dim")
        return Panel(Group(head, bar, stats, memory, files, log), title=f"tunerd attach {self.job}",
                     subtitle="Ctrl-C detaches; the job goes on")


async def _watch(view: JobView, live: Live) -> None:
    async for message in follow(view.job):
        view.feed(message)
        if message.get("end"):
            live.refresh()
            return


def attach(job: str) -> int:
    """Show `job` live until it ends or the user presses Ctrl-C."""
    console = Console()
    view = JobView(job)
    try:
        with Live(view, console=console, refresh_per_second=4) as live:
            asyncio.run(_watch(view, live))
    except KeyboardInterrupt:
        console.print(f"detached from {job}; it goes on (tunerd attach {job} to come back)")
        return 0
    console.print(f"{job}: {view.state}" + (f" — {view.reason}" if view.reason else ""))
    return 0
