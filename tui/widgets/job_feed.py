"""A job's live event stream from tunerd, as messages; reconnects by itself after a daemon restart."""
from __future__ import annotations

import asyncio
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
        """A progress event: only the newest one is shown, so a queued one is replaced.

        `losses` holds every loss since the last one handled (shared by the queued messages),
        so coalescing drops redraws, never points of the loss chart.
        """

        def __init__(self, stream: str, event: dict[str, Any], losses: list[float]):
            super().__init__(stream, event)
            self.losses = losses

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, JobFeed.Progress)

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
        self.losses: list[float] = []   # filled here, emptied by the Progress handler (same event loop)

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
            if isinstance(event.get("loss"), (int, float)):
                self.losses.append(float(event["loss"]))
            self.post_message(self.Progress(stream, event, self.losses))
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
