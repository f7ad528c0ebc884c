"""Following a job's event files for subscribers: every event after `since`, once, in order.

Each subscription reads the files itself by byte offset (the files are the truth, so a
reconnecting client simply starts again from the seq it last saw); the daemon's watchdog
observer only wakes the subscriptions of a job when one of its files changes, and a slow poll
covers file systems where inotify says nothing (NFS, some containers).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from watchdog.events import (
    EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from tuner.daemon import protocol as p
from tuner.daemon.jobs import DAEMON_EVENTS, Job
from tuner.engine import jobdir

log = logging.getLogger("tunerd.feed")

POLL_SECONDS = 1.0
CHUNK = 1024 * 1024  # a long history is read in pieces so other clients are served meanwhile
STREAMS = {"engine": jobdir.EVENTS, "daemon": DAEMON_EVENTS}
WRITE_EVENTS = (EVENT_TYPE_MODIFIED, EVENT_TYPE_CREATED, EVENT_TYPE_MOVED)


class ChunkTail:
    """Reads complete JSON lines from a growing file, from a byte offset, a chunk at a time."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self._partial = b""
        # Kept open: opening and closing the file on every look is itself a stream of inotify
        # events (open, close) for the file observer to sift, per subscriber and per event; with
        # ten subscribers at 100 events/s that was half of tunerd's CPU (bench/daemon_latency.py).
        self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """The next chunk's events, and whether more bytes are already waiting."""
        if self._file is None:
            try:
                self._file = open(self.path, "rb")
            except FileNotFoundError:
                return [], False
        f = self._file
        f.seek(self.offset)
        data = f.read(CHUNK)
        more = bool(f.read(1))
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                event = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                # A torn line left by a writer that was killed mid-write: not an event.
                log.warning("%s: skipping a line that is not JSON at byte %d", self.path, self.offset)
                continue
            if isinstance(event, dict):
                events.append(event)
        return events, more


class Hub:
    """Wakes the subscriptions of a job when its event files change."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.observer = Observer()
        self.observer.daemon = True
        self._watches: dict[str, Any] = {}
        self._handler = _Handler(self)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()

    def wake(self, folder: str) -> None:
        for event in self.waiters.get(folder, ()):
            event.set()

    def _watch(self, folder: str) -> None:
        if folder in self._watches:
            return
        try:
            self._watches[folder] = self.observer.schedule(self._handler, folder, recursive=False)
        except OSError as e:
            # Out of inotify watches, say: the poll still delivers, only later.
            log.warning("cannot watch %s (%s); following it by polling every %.0fs", folder, e, POLL_SECONDS)

    def _unwatch(self, folder: str) -> None:
        watch = self._watches.pop(folder, None)
        if watch is not None:
            try:
                self.observer.unschedule(watch)
            except (KeyError, OSError) as e:
                log.warning("cannot stop watching %s: %s", folder, e)

    async def stream(self, job: Job, since: dict[str, int],
                     send: Callable[[list[dict[str, Any]]], Awaitable[None]]) -> dict[str, int]:
        """Send every event after `since` (per stream) until the job has ended and all is sent."""
        folder = job.dir
        wake = asyncio.Event()
        self.waiters[folder].add(wake)
        self._watch(folder)
        tails = {name: ChunkTail(job.path / file) for name, file in STREAMS.items()}
        last = {name: int(since.get(name, 0)) for name in STREAMS}
        try:
            while True:
                wake.clear()
                # Read the state before the files: whatever the engine wrote before it ended is
                # in the files by the time the daemon saw it end.
                ended = job.state in p.FINAL_STATES
                more = True
                while more:
                    more = False
                    for name, tail in tails.items():
                        events, waiting = tail.read()
                        more = more or waiting
                        batch = []
                        for event in events:
                            seq = event.get("seq")
                            if isinstance(seq, int) and seq > last[name]:
                                last[name] = seq
                                batch.append({"stream": name, "event": event})
                        if batch:
                            await send(batch)
                if ended:
                    await send([{"end": True, "job": job.record()}])
                    return last
                await wait_event(wake, POLL_SECONDS)
        finally:
            for tail in tails.values():
                tail.close()
            self.waiters[folder].discard(wake)
            if not self.waiters[folder]:
                del self.waiters[folder]
                self._unwatch(folder)


async def wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for `event` or `timeout`; unlike 3.11's wait_for, never swallows a cancellation."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


class _Handler(FileSystemEventHandler):
    """Runs on watchdog's thread: hands the change to the event loop and nothing else."""

    def __init__(self, hub: Hub):
        self.hub = hub

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Only writes: reacting to opens and closes would wake on our own reads, for ever.
        if event.event_type not in WRITE_EVENTS:
            return
        path = event.src_path if isinstance(event.src_path, str) else event.src_path.decode()
        name = Path(path).name
        if name in (jobdir.EVENTS, DAEMON_EVENTS):
            self.hub.loop.call_soon_threadsafe(self.hub.wake, str(Path(path).parent))
