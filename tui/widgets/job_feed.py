"""A job's live event stream from tunerd, as messages; reconnects by itself after a daemon restart."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from textual import work
from textual.message import Message
from textual.widget import Widget

from tuner.daemon import protocol as p
from tuner.daemon.client import AsyncClient

RETRY_SECONDS = 1.0


class JobFeed(Widget):
    """Invisible: subscribes to one job and posts what arrives; it never touches other widgets."""

    DEFAULT_CSS = "JobFeed { display: none; }"

    class Event(Message):
        """One engine or daemon event."""

        def __init__(self, stream: str, event: dict[str, Any]):
            super().__init__()
            self.stream, self.event = stream, event

    class Progress(Event):
        """A progress event: only the newest one is drawn, so a queued one is replaced.

        `pending` holds every progress event not yet handled (shared by the queued messages);
        the handler folds them in with `take()`, so coalescing drops redraws, never events.
        """

        def __init__(self, stream: str, event: dict[str, Any], pending: deque[dict[str, Any]]):
            super().__init__(stream, event)
            self.pending = pending

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, JobFeed.Progress)

        def take(self) -> list[dict[str, Any]]:
            """The progress events up to and including this one, in order, removed from `pending`.

            Only the replaced messages' events come with it: a later one that is already
            pending waits for its own message, so no event overtakes one that came before it.
            """
            taken = []
            while self.pending:
                taken.append(self.pending.popleft())
                if taken[-1] is self.event:
                    break
            return taken

    class Ended(Message):
        """The job reached a final state and every event before it has arrived."""

        def __init__(self, job: dict[str, Any]):
            super().__init__()
            self.job = job

    class Connection(Message):
        """The link to tunerd came up or went down (with why)."""

        def __init__(self, connected: bool, detail: str = ""):
            super().__init__()
            self.connected, self.detail = connected, detail

    def __init__(self, job: str, *, socket: Any = None, id: str | None = None):
        super().__init__(id=id)
        self.job = job
        self.socket = socket
        self.seen = {"engine": 0, "daemon": 0}
        self.pending: deque[dict[str, Any]] = deque()   # filled here, emptied by Progress.take (same event loop)

    def start(self) -> None:
        """Begin following the job (the monitor calls this; tests may feed messages instead)."""
        self.follow()

    def deliver(self, message: dict[str, Any]) -> None:
        """Turn one streamed message into a widget message (the one path recorded streams use too)."""
        if message.get("end"):
            self.post_message(self.Ended(message.get("job") or {}))
            return
        stream, event = message["stream"], message["event"]
        if isinstance(event.get("seq"), int):
            self.seen[stream] = max(self.seen[stream], event["seq"])
        if stream == "engine" and event.get("type") == "progress":
            self.pending.append(event)
            self.post_message(self.Progress(stream, event, self.pending))
        else:
            self.post_message(self.Event(stream, event))

    @work(exclusive=True, group="feed")
    async def follow(self) -> None:
        # Resubscribing from the last seq seen gives every event once: no gap, no duplicate.
        while True:
            client = AsyncClient(self.socket)
            try:
                await client.connect()
                self.post_message(self.Connection(True))
                async for message in client.subscribe(self.job, self.seen["engine"], self.seen["daemon"]):
                    self.deliver(message)
                    if message.get("end"):
                        return
            except p.RequestFailed as e:
                if e.code != "lagging":
                    self.post_message(self.Connection(False, f"tunerd refused: {e}"))
                    return
            except (p.DaemonNotRunning, ConnectionError, OSError) as e:
                self.post_message(self.Connection(False, f"lost tunerd ({e}); reconnecting"))
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                await client.close()
