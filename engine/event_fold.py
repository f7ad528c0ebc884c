"""A job's events folded into what a person watching it wants to see; the one fold every display uses.

Torch-free and display-free: `tuner train` and `tunerd attach` render a `JobView` with rich
(engine/liveview.py), the TUI's monitor with Textual widgets (tui/screens/monitor.py). The same
events give both the same state; only the drawing differs.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

LOSS_POINTS = 400   # the loss chart's history; older points drop off
LOG_LINES = 200


@dataclass
class JobView:
    """The job's current picture: state, phase, progress, losses, memory, files and log lines."""

    state: str | None = None
    """The daemon's job state (queued, running, …); None while no daemon has said (or none runs it)."""
    reason: str = ""
    """Why the daemon's job is in that state (its exit code, a stop request …)."""
    phase: str | None = None
    """The engine's phase (loading, caching, training, validating, saving, done, failed, stopped)."""
    message: str = ""
    """The phase's message; cleared by training progress, which makes "step 0 of N" stale."""
    progress: dict[str, Any] = field(default_factory=dict)
    """The latest progress event (step, total, epoch, loss, lr, grad_norm, steps_per_s, eta_s …)."""
    losses: deque[float] = field(default_factory=lambda: deque(maxlen=LOSS_POINTS))
    """Every reported loss, oldest first (the last LOSS_POINTS of them)."""
    engine_memory: list[dict[str, Any]] = field(default_factory=list)
    """The engine's own reading per device: name, allocated, reserved, peak (bytes)."""
    rss: int | None = None
    """The engine process's resident memory (bytes)."""
    gpu_memory: list[dict[str, Any]] = field(default_factory=list)
    """The daemon's NVML reading per GPU: device, name, used, total (bytes)."""
    cache: dict[str, Any] = field(default_factory=dict)
    """The latest cache event (dataset, kind, done, total)."""
    preview: dict[str, Any] = field(default_factory=dict)
    """The latest preview event (prompt, nickname, k, n, step, path)."""
    validations: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The latest validation event per prompt nickname, the most recently drawn last."""
    checkpoint: dict[str, Any] = field(default_factory=dict)
    """The latest checkpoint event (step, path)."""
    result: dict[str, Any] = field(default_factory=dict)
    """The done event's paths (pipeline, validation …) once the engine has finished."""
    errors: list[str] = field(default_factory=list)
    """Every error message, in order."""
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    """One line per event worth a line (phases, job states, validations, checkpoints, logs, errors)."""
    ended: bool = False
    """The subscription said the job reached a final state and every event before it arrived."""

    # -- folding ---------------------------------------------------------------------------

    def apply_message(self, message: dict[str, Any]) -> str | None:
        """Fold one message of a tunerd subscription ({stream, event} or the end); returns its log line."""
        if message.get("end"):
            return self.end(message.get("job") or {})
        return self.apply(message.get("event") or {}, message.get("stream", "engine"))

    def apply(self, event: dict[str, Any], stream: str = "engine") -> str | None:
        """Fold one event of the engine's (events.jsonl) or the daemon's stream; returns its log line."""
        line = (self._daemon if stream == "daemon" else self._engine)(event)
        if line:
            self.log.append(line)
        return line

    def end(self, job: dict[str, Any]) -> str:
        """The subscription's last message: the job record in its final state."""
        self.ended = True
        self.state, self.reason = job.get("state", self.state), job.get("reason", "")
        line = f"job ended: {self.state}" + (f" ({self.reason})" if self.reason else "")
        self.log.append(line)
        return line

    def _daemon(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if kind == "status" and "job_state" in event:
            self.state, self.reason = event["job_state"], event.get("reason", "")
            return f"job {self.state}" + (f": {self.reason}" if self.reason else "")
        if kind == "memory":
            self.gpu_memory = event.get("devices") or []
        return None

    def _engine(self, event: dict[str, Any]) -> str | None:
        kind = event.get("type")
        if kind == "status":
            self.phase = event.get("phase", self.phase)
            self.message = event.get("message") or ""
            return f"phase {self.phase}" + (f": {self.message}" if self.message else "")
        if kind == "progress":
            self.progress = event
            if isinstance(event.get("loss"), (int, float)):
                self.losses.append(float(event["loss"]))
            if self.phase == "training":
                self.message = ""
            return None
        if kind == "memory":
            self.engine_memory = event.get("devices") or []
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
            self.validations.pop(key, None)   # re-inserted, so the newest drawn comes last
            self.validations[key] = event
            return f"validation at step {event.get('step')}: {key}"
        if kind == "checkpoint":
            self.checkpoint = event
            return f"checkpoint at step {event.get('step')}: {event.get('path')}"
        if kind == "log":
            return f"{event.get('level', 'info')}: {event.get('message', '')}"
        if kind == "error":
            self.errors.append(str(event.get("message")))
            where = f" (traceback: {event['traceback_path']})" if event.get("traceback_path") else ""
            return f"error: {event.get('message')}{where}"
        if kind == "done":
            self.result = event.get("paths") or {}
            pipeline = f": pipeline in {self.result['pipeline']}" if self.result.get("pipeline") else ""
            board = (f"; TensorBoard: tensorboard --logdir {self.result['tensorboard']}"
                     if self.result.get("tensorboard") else "")
            return f"done at step {event.get('step')}{pipeline}{board}"
        return None

    # -- what displays read ----------------------------------------------------------------

    @property
    def step(self) -> int:
        return self.progress.get("step") or 0

    @property
    def total(self) -> int:
        return self.progress.get("total") or 0

    @property
    def eta_s(self) -> float | None:
        return self.progress.get("eta_s")

    def latest_validations(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        """The last `n` prompts' latest validation events, as (nickname, event), oldest first."""
        return list(self.validations.items())[-n:] if n > 0 else []

    @property
    def latest_validation_path(self) -> str | None:
        """The first file of the most recently drawn validation sample."""
        if not self.validations:
            return None
        paths = next(reversed(self.validations.values())).get("paths") or []
        return str(paths[0]) if paths else None


    def snapshot(self, validations: int = 6, log_lines: int = 40) -> dict[str, Any]:
        """Everything a web page draws, as JSON-ready values (the browser only renders it)."""
        return {
            "state": self.state, "reason": self.reason, "phase": self.phase, "message": self.message,
            "step": self.step, "total": self.total, "eta": duration(self.eta_s), "progress": self.progress,
            "losses": list(self.losses), "engine_memory": self.engine_memory, "rss": self.rss,
            "gpu_memory": self.gpu_memory, "cache": self.cache, "preview": self.preview,
            "validations": [{"nickname": nick, **event} for nick, event in self.latest_validations(validations)],
            "checkpoint": self.checkpoint, "result": self.result, "errors": self.errors,
            "log": list(self.log)[-log_lines:], "ended": self.ended,
        }


def duration(seconds: float | None) -> str:
    """H:MM:SS, or '-' when unknown."""
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
