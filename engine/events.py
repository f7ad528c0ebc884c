"""The engine's event stream: append-only JSON lines with a rising `seq` and a `time`.

Torch-free: the daemon and the TUI read these files too. One writer per file (rank 0 of the
engine); readers follow it by byte offset and never see a half-written line as an event.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Event types the engine writes. Each carries `seq`, `time` and `type`, plus:
#   status      phase: loading|caching|training|validating|saving|done|failed|stopped, message?
#   progress    step, total, epoch, loss, lr, grad_norm, steps_per_s, samples_per_s, eta_s
#   memory      devices: [{name, allocated, reserved, peak}] (bytes), rss (bytes)
#   cache       dataset, kind (latents|text), done, total
#   preview     prompt, nickname, k, n, step, path
#   validation  prompt, nickname, step, paths
#   checkpoint  step, path
#   log         level, message
#   error       message, traceback_path
#   done        step, paths {pipeline, checkpoints, validation}
EVENT_TYPES = (
    "status", "progress", "memory", "cache", "preview", "validation",
    "checkpoint", "log", "error", "done",
)
PHASES = ("loading", "caching", "training", "validating", "saving", "done", "failed", "stopped")


class EventWriter:
    """Appends events to an events.jsonl file; `seq` continues from what the file holds."""

    def __init__(self, path: str | os.PathLike[str] | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._seq = last_seq(self.path) if self.path is not None else 0
        self._listeners: list = []

    def add_listener(self, fn) -> None:
        """Also hand every event to `fn(event)` (a progress display, a tracker)."""
        self._listeners.append(fn)

    def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}; expected one of {EVENT_TYPES}")
        with self._lock:
            self._seq += 1
            event = {"seq": self._seq, "time": round(time.time(), 3), "type": type, **fields}
            if self.path is not None:
                line = json.dumps(event, default=_jsonable) + "\n"
                # One write() of a whole line on an O_APPEND file: readers never see half of
                # it as a complete line.
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
        for fn in self._listeners:
            fn(event)
        return event


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} into an event")


def last_seq(path: Path) -> int:
    """The highest `seq` in an events file (0 when missing or empty)."""
    seq = 0
    for event in read_events(path):
        seq = max(seq, int(event.get("seq", 0)))
    return seq


def read_events(path: str | os.PathLike[str], since_seq: int = 0) -> Iterator[dict[str, Any]]:
    """Every complete event in the file with seq > since_seq, in file order."""
    tail = EventTail(path)
    yield from (e for e in tail.read_new() if e.get("seq", 0) > since_seq)


class EventTail:
    """Follows an events file by byte offset; returns only complete lines, each once."""

    def __init__(self, path: str | os.PathLike[str], offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # after the last newline: incomplete (or empty)
        events = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                events.append(json.loads(raw))
            except json.JSONDecodeError:
                # A torn line from a crashed writer: skip it rather than stop following.
                continue
        return events
