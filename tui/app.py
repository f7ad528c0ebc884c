"""`tuner-tui`: the terminal app (a thin shell over the home, wizard and monitor screens)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from platformdirs import user_downloads_path
from textual import on, work
from textual.app import App

from tuner.tui.crash import CrashDialog, Guarded, cause, record
from tuner.tui.messages import DaemonStarted
from tuner.tui.screens.home import HomeScreen

# Past this many unexpected errors in one session something fails on every frame: end as Textual would.
MAX_CRASHES = 20


class TunerApp(Guarded, App):
    """Home first; the wizard and the monitor are pushed on top of it."""

    CSS_PATH = "tuner.tcss"
    TITLE = "tuner"

    def __init__(self, hardware: dict[str, Any] | None = None, open_config: str | None = None,
                 attach: str | None = None):
        super().__init__()
        self.hardware = hardware
        self.initial_config = open_config
        self.initial_attach = attach
        self._after_start: Callable[[], Any] | None = None
        self.crashes: list[BaseException] = []   # the unexpected errors shown so far (the log has their tracebacks)

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())
        if self.initial_config:
            self.open_wizard(self.initial_config)
        elif self.initial_attach:
            self.open_monitor(self.initial_attach)

    # -- the crash guard (tuner.tui.crash) --------------------------------------------------

    def report_crash(self, error: BaseException) -> None:
        """Log an unexpected error and say so in a dialog; the app and every screen's state go on."""
        self.crashes.append(cause(error))
        log = record(error)
        if len(self.crashes) > MAX_CRASHES:
            super()._handle_exception(error)
            return
        if isinstance(self.screen, CrashDialog):
            return   # already saying so; the log has this one too
        try:
            self.push_screen(CrashDialog(error, log), self._after_crash)
        except Exception:  # noqa: BLE001 — the guard itself failed: end as Textual would, with the first error
            super()._handle_exception(error)

    def _after_crash(self, _closed: None) -> None:
        # A screen that failed while it was being built lacks widgets (or its message loop): leave it. What was typed
        # lives in the wizard's state, so the step below shows it.
        while len(self.screen_stack) > 1 and (getattr(self.screen, "half_built", False) or not self.screen.is_running):
            self.pop_screen()

    def _handle_exception(self, error: Exception) -> None:
        # Textual's hook for errors outside a message handler (workers, timers, composing a screen).
        if self._exit or not self.is_running or not self.screen_stack:
            super()._handle_exception(error)   # starting up (a bad stylesheet) or shutting down: Textual's way
            return
        self.report_crash(error)

    def deliver_screenshot(self, filename: str | None = None, path: str | None = None,
                           time_format: str | None = None) -> str | None:
        # Textual saves the palette's screenshot in ~/Downloads, which fails where there is none
        # (servers, containers): save it where tuner-tui runs instead, and the toast says where.
        if path is None:
            downloads = user_downloads_path()
            path = str(downloads if downloads.is_dir() else Path.cwd())
        return super().deliver_screenshot(filename, path, time_format)

    # -- screens -----------------------------------------------------------------------------

    def open_wizard(self, folder: str | None = None) -> None:
        """Start the wizard, fresh or from an existing config folder."""
        from tuner.engine.config import ConfigError
        from tuner.tui.screens.wizard import first_step
        from tuner.tui.wizard_state import WizardState, from_folder

        try:
            state = from_folder(folder, self.hardware) if folder else WizardState(hardware=self.hardware)
        except ConfigError as e:
            self.notify("\n".join(str(i) for i in e.issues[:6]), title=f"cannot open {folder}", severity="error",
                        timeout=15)
            return
        self.push_screen(first_step(state))

    def open_monitor(self, job: str, from_wizard: bool = False) -> None:
        """Attach to a job; from the wizard, its steps are closed first (detaching returns home)."""
        from tuner.tui.screens.monitor import MonitorScreen

        if from_wizard:
            while not isinstance(self.screen, HomeScreen):
                self.pop_screen()
        for screen in self.screen_stack:
            if isinstance(screen, HomeScreen):
                screen.keep_on = job   # back home, the cursor is on the job just watched
        self.push_screen(MonitorScreen(job))

    def offer_daemon_start(self, then: Callable[[], Any] | None = None) -> None:
        """Ask, then start tunerd in the background; `then` runs once it answers."""
        from tuner.tui.screens.confirm import Confirm

        def answered(yes: bool | None) -> None:
            if yes:
                self._after_start = then
                self.start_daemon()
            else:
                self.notify("tunerd not started: jobs cannot be listed or submitted until it runs "
                            "(`tunerd start` or D on the home screen)", severity="warning")

        self.push_screen(Confirm("tunerd is not running. Start it now in the background?\n"
                                 "It keeps running (with your jobs) after tuner-tui exits.", "Start it", "Not now"),
                         answered)

    @work(thread=True, exclusive=True, group="daemon-start")
    def start_daemon(self) -> None:
        from tuner.tui import daemon_link

        try:
            self.post_message(DaemonStarted(daemon_link.start_daemon()))
        except (RuntimeError, OSError) as e:
            self.post_message(DaemonStarted("", str(e)))

    @on(DaemonStarted)
    def daemon_started(self, message: DaemonStarted) -> None:
        if message.error:
            self.notify(message.error, title="tunerd did not start", severity="error", timeout=15)
            return
        self.notify(message.text)
        if self._after_start is not None:
            self._after_start()
            self._after_start = None


def main(argv: list[str] | None = None) -> int:
    """Run the app: `tuner-tui [--open CONFIG_FOLDER | --attach JOB] [--web [--host H] [--port P]]`."""
    parser = argparse.ArgumentParser(prog="tuner-tui", description="Fine-tune diffusion models from the terminal.")
    parser.add_argument("--open", metavar="FOLDER", help="open a config folder (tuner's or SimpleTuner's) in the wizard")
    parser.add_argument("--attach", metavar="JOB", help="open the monitor of a job")
    parser.add_argument("--web", action="store_true",
                        help="serve the app to a browser instead (through an ssh tunnel: it prints how)")
    parser.add_argument("--host", default="127.0.0.1", help="with --web: the address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="with --web: the port (default 8000)")
    args = parser.parse_args(argv)
    if args.web:
        from tuner.tui.web import serve

        return serve(args.host, args.port, open_config=args.open, attach=args.attach)
    TunerApp(open_config=args.open, attach=args.attach).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
