"""Home: the jobs tunerd knows, with attach / stop / resume, and the way into the wizard."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from tuner.daemon import protocol as p
from tuner.engine.event_fold import duration
from tuner.tui import daemon_link
from tuner.tui.crash import Guarded
from tuner.tui.widgets.fitted_footer import FittedFooter

POLL_SECONDS = 2.0
STATE_STYLES = {"running": "bold green", "starting": "green", "stopping": "yellow", "queued": "cyan",
                "done": "blue", "failed": "bold red", "stopped": "yellow", "interrupted": "magenta"}


class HomeScreen(Guarded, Screen):
    """The job list (refreshed every few seconds) and the keys that act on the highlighted job."""

    BINDINGS = [
        Binding("n", "new", "New"),
        Binding("o", "open", "Open config"),
        Binding("enter,a", "attach", "Attach", key_display="a/⏎"),
        Binding("x", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("D", "start_daemon", "Start tunerd"),
        Binding("q", "app.quit", "Quit"),
    ]

    class Jobs(Message):
        """The daemon's job list, or why there is none (`down` is the message to show)."""

        def __init__(self, jobs: list[dict[str, Any]] | None, down: str = ""):
            super().__init__()
            self.jobs, self.down = jobs, down

    class Answer(Message):
        """tunerd's answer to an action on a job."""

        def __init__(self, text: str, ok: bool):
            super().__init__()
            self.text, self.ok = text, ok

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[dict[str, Any]] = []
        self.daemon_up: bool | None = None
        self.keep_on: str | None = None   # the job under the cursor, kept there across refreshes (None: the newest)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("asking tunerd…", id="banner")
        table = DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        table.add_columns("job", "state", "progress", "model", "started", "ETA")
        yield table
        yield Static("n starts a new training; o opens a config folder (tuner's or SimpleTuner's).", id="hint")
        yield FittedFooter()

    def on_mount(self) -> None:
        self.title = "tuner"
        self.sub_title = "jobs"
        self.poll()
        self.set_interval(POLL_SECONDS, self.poll)
        self.query_one(DataTable).focus()

    def poll(self) -> None:
        self.fetch()

    @work(exclusive=True, group="jobs")
    async def fetch(self) -> None:
        try:
            self.post_message(self.Jobs(await daemon_link.jobs()))
        except (p.DaemonNotRunning, ConnectionError, OSError) as e:
            self.post_message(self.Jobs(None, str(e)))

    @on(Jobs)
    def show_jobs(self, message: Jobs) -> None:
        banner = self.query_one("#banner", Static)
        if self.daemon_up != (message.jobs is not None):
            self.daemon_up = message.jobs is not None
            self.refresh_bindings()
        banner.set_class(not self.daemon_up, "down")
        if message.jobs is None:
            banner.update(Text.assemble(("tunerd is not running. ", "bold"),
                                        "Press D (shift+d) to start it; jobs run under it and outlive this window.",
                                        ("" if message.down == daemon_link.NOT_RUNNING else f" ({message.down})",
                                         "dim")))
            self.jobs = []
            self.query_one(DataTable).clear()
            return
        running = sum(j["state"] in p.ACTIVE_STATES for j in message.jobs)
        banner.update(f"tunerd: {len(message.jobs)} job(s), {running} running")
        table = self.query_one(DataTable)
        # The newest first: the job just submitted is the one under the cursor.
        self.jobs = sorted(message.jobs, key=lambda j: j.get("created") or 0, reverse=True)
        table.clear()
        for job in self.jobs:
            step = f"{job['step']}/{job['total']}" if job.get("step") is not None else "-"
            table.add_row(job.get("name") or job["id"], Text(job["state"], style=STATE_STYLES.get(job["state"], "")),
                          step, job.get("model", "-"), daemon_link.when(job.get("created")),
                          duration(job.get("eta_s")), key=job["id"])
        ids = [job["id"] for job in self.jobs]
        if ids:
            table.move_cursor(row=ids.index(self.keep_on) if self.keep_on in ids else 0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        # The user moved the cursor: keep it on that job when the list refreshes.
        if event.row_key is not None and event.row_key.value in {j["id"] for j in self.jobs}:
            self.keep_on = event.row_key.value

    def selected(self) -> dict[str, Any] | None:
        table = self.query_one(DataTable)
        if not self.jobs or table.cursor_row is None or table.cursor_row >= len(self.jobs):
            self.notify("no job selected" if self.daemon_up else daemon_link.NOT_RUNNING, severity="warning")
            return None
        return self.jobs[table.cursor_row]

    def action_new(self) -> None:
        self.app.open_wizard()

    def action_open(self) -> None:
        from tuner.tui.screens.open_folder import OpenFolder

        self.app.push_screen(OpenFolder("Open a config folder (config.json + multidatabackend.json)"),
                             lambda path: path and self.app.open_wizard(path))

    def action_attach(self) -> None:
        job = self.selected()
        if job:
            self.app.open_monitor(job["id"])

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_attach()

    def action_stop(self) -> None:
        job = self.selected()
        if not job:
            return
        from tuner.tui.screens.confirm import Confirm

        queued = job["state"] == p.QUEUED
        verb = "cancel" if queued else "stop_job"
        question = (f"Cancel {job['id']}? It has not started." if queued else
                    f"Stop {job['id']}? It saves a checkpoint first; R resumes it later.")
        self.app.push_screen(Confirm(question), lambda yes: yes and self.act(verb, job["id"]))

    def action_resume(self) -> None:
        job = self.selected()
        if job:
            self.act("resume", job["id"])

    @work(group="act")
    async def act(self, verb: str, job: str) -> None:
        try:
            reply = await daemon_link.request(verb, job=job)
            self.post_message(self.Answer(reply.get("message") or f"{verb}: done", True))
        except (p.DaemonNotRunning, p.RequestFailed, ConnectionError, OSError) as e:
            self.post_message(self.Answer(str(e), False))
        self.fetch()

    @on(Answer)
    def answered(self, message: Answer) -> None:
        self.notify(message.text, severity="information" if message.ok else "error")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The footer offers what works now: job keys need tunerd, starting it needs it down.
        if action == "start_daemon":
            return self.daemon_up is not True
        if action in ("attach", "stop", "resume"):
            return True if self.daemon_up else None
        return True

    def action_start_daemon(self) -> None:
        self.app.offer_daemon_start(then=self.fetch)
