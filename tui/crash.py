"""The crash guard: an unexpected exception becomes a dialog naming the log that holds its traceback,
and the app, its screens and what was typed in them live on.

Textual ends the app on any exception in a handler, an action, a worker or a timer, and stops the
message loop of the screen or widget it happened in. `Guarded` (on the app and every screen) keeps
those loops running by catching around each message it handles; the app's `_handle_exception`
hook catches the rest (workers, timers, a screen that failed to compose) the same way.
"""
from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static
from textual.worker import WorkerFailed

from tuner.daemon import paths

LOG_NAME = "tuner-tui-errors.log"


def log_path() -> Path:
    """Where tuner-tui appends the tracebacks of its unexpected errors: beside tunerd's own log."""
    return paths.data_dir() / LOG_NAME


def cause(error: BaseException) -> BaseException:
    """The exception itself, not Textual's wrapper for one raised in a worker."""
    return error.error if isinstance(error, WorkerFailed) else error


def record(error: BaseException) -> Path | None:
    """Append the error's traceback to the log; the log's path (the temp folder's when the data dir is not
    writable), or None when neither could be written."""
    error = cause(error)
    entry = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} tuner-tui: unexpected {type(error).__name__}\n"
             + "".join(traceback.format_exception(error)) + "\n")
    for path in (log_path(), Path(tempfile.gettempdir()) / LOG_NAME):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(entry)
            return path
        except OSError:
            continue
    return None


class CrashDialog(ModalScreen[None]):
    """Says that something failed, that nothing typed is lost, and where the traceback is."""

    BINDINGS = [Binding("escape,enter", "close", "Close")]

    def __init__(self, error: BaseException, log: Path | None):
        super().__init__()
        self.error = cause(error)
        self.log_file = log

    def compose(self) -> ComposeResult:
        what = f"{type(self.error).__name__}: {self.error}"
        where = (f"The traceback is in {self.log_file}; please attach it when you report this."
                 if self.log_file else "The traceback could not be written to a log file (the data folder and the "
                                  "temp folder refused it).")
        with Vertical(id="dialog"):
            yield Label("Something went wrong inside tuner-tui", classes="title")
            yield Static(Text(what[:500]), id="crash-error")
            yield Static(Text("Nothing you typed is lost: close this and carry on from where you were. " + where),
                         id="crash-log")
            with Horizontal(classes="buttons"):
                yield Button("Close (Enter)", variant="primary", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class Guarded:
    """Mixin for the app and its screens: an exception while handling a message or running an action goes to
    the app's crash guard, and the message loop goes on (Textual would stop it and end the app).

    A screen that failed while being built (compose, mount) is `half_built`: the guard leaves it once
    the dialog is closed, since its widgets may be missing.
    """

    half_built = False

    async def _dispatch_message(self, message) -> None:
        crashes = len(self.app.crashes)  # type: ignore[attr-defined]
        try:
            await super()._dispatch_message(message)  # type: ignore[misc]
        except Exception as error:  # noqa: BLE001 — every one is logged and shown; that is this class's job
            self.app.report_crash(error)  # type: ignore[attr-defined]
        if isinstance(message, (events.Compose, events.Mount)) and len(self.app.crashes) > crashes:  # type: ignore[attr-defined]
            self.half_built = True
