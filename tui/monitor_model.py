"""What the monitor shows, folded from a job's engine and daemon events; no widgets here."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

LOSS_POINTS = 400
LOG_LINES = 200


@dataclass
class MonitorModel:
    """The job's current picture: state, progress, losses, memory, images and log lines."""

    job: str
    state: str = "?"
    reason: str = ""
    phase: str = "-"
    progress: dict[str, Any] = field(default_factory=dict)
    losses: deque = field(default_factory=lambda: deque(maxlen=LOSS_POINTS))
    engine_memory: list[dict[str, Any]] = field(default_factory=list)
    gpu_memory: list[dict[str, Any]] = field(default_factory=list)
    rss: int | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    preview: dict[str, Any] = field(default_factory=dict)
    validations: dict[str, dict[str, Any]] = field(default_factory=dict)   # by prompt nickname
    checkpoint: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ended: bool = False
    last_seq: dict[str, int] = field(default_factory=lambda: {"engine": 0, "daemon": 0})

    def feed(self, stream: str, event: dict[str, Any]) -> str | None:
        """Fold one event in; returns a log line for it, if it deserves one."""
        seq = event.get("seq")
        if isinstance(seq, int):
            self.last_seq[stream] = max(self.last_seq.get(stream, 0), seq)
        kind = event.get("type")
        if stream == "daemon":
            if kind == "status" and "job_state" in event:
                self.state, self.reason = event["job_state"], event.get("reason", "")
                return f"job {self.state}" + (f": {self.reason}" if self.reason else "")
            if kind == "memory":
                self.gpu_memory = event.get("devices", [])
            return None
        if kind == "status":
            self.phase = event.get("phase", self.phase)
            return f"phase {self.phase}" + (f": {event['message']}" if event.get("message") else "")
        if kind == "progress":
            self.progress = event   # losses arrive in batches through add_losses (progress coalesces)
            return None
        if kind == "memory":
            self.engine_memory = event.get("devices", [])
            self.rss = event.get("rss", self.rss)
            return None
        if kind == "cache":
            self.cache = event
            return None
        if kind == "preview":
            self.preview = event
            return None
        if kind == "validation":
            key = event.get("nickname") or event.get("prompt") or "validation"
            self.validations[key] = event
            return f"validation at step {event.get('step')}: {key}"
        if kind == "checkpoint":
            self.checkpoint = event
            return f"checkpoint at step {event.get('step')}: {event.get('path')}"
        if kind == "log":
            return f"{event.get('level', 'info')}: {event.get('message')}"
        if kind == "error":
            self.errors.append(str(event.get("message")))
            where = f" (traceback: {event['traceback_path']})" if event.get("traceback_path") else ""
            return f"error: {event.get('message')}{where}"
        if kind == "done":
            return f"done at step {event.get('step')}"
        return None

    def add_losses(self, values: list[float]) -> None:
        """Append the losses of every step since the last batch."""
        self.losses.extend(values)

    def end(self, job: dict[str, Any]) -> str:
        """The subscription's last message: the job reached a final state."""
        self.ended = True
        self.state, self.reason = job.get("state", self.state), job.get("reason", "")
        return f"job ended: {self.state}" + (f" ({self.reason})" if self.reason else "")


def duration(seconds: float | None) -> str:
    """H:MM:SS, or '-' when unknown."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def gib(n: float | None) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, (int, float)) else "-"
