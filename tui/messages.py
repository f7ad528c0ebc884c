"""App-wide messages: what more than one screen reacts to."""
from __future__ import annotations

from textual.message import Message


class DaemonStarted(Message):
    """The app started tunerd (or found it running); `text` says which, `error` says why not."""

    def __init__(self, text: str, error: str = ""):
        super().__init__()
        self.text, self.error = text, error
