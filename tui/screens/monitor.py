"""The live monitor of one job: progress, loss, memory, previews, validation images and the log."""
from __future__ import annotations

import time
from collections import deque

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Header, Label, ProgressBar, RichLog, Static

from tuner.daemon import protocol as p
from tuner.engine.event_fold import LOSS_POINTS, JobView, duration
from tuner.tui import daemon_link
from tuner.tui.crash import Guarded
from tuner.tui.widgets.job_feed import JobFeed
from tuner.tui.widgets.loss_chart import LossChart
from tuner.tui.widgets.memory_gauges import MemoryGauges
from tuner.tui.widgets.pixel_image import PixelImage
from tuner.tui.widgets.fitted_footer import FittedFooter

VALIDATION_SHOWN = 3
CONTROLS = {"stop_job": "stop (checkpoint, then exit)", "save": "save a checkpoint now", "sample": "sample now",
            "resume": "resume from the latest checkpoint"}
RESUMABLE = (p.STOPPED, p.FAILED, p.INTERRUPTED)
COMPACT_BELOW = 32   # terminal rows


class MonitorScreen(Guarded, Screen):
    """Attached to a job through tunerd; detaching leaves the job running."""

    BINDINGS = [
        Binding("x", "stop", "Stop"),
        Binding("s", "control('save')", "Save now"),
        Binding("p", "control('sample')", "Sample now"),
        Binding("r", "resume", "Resume"),
        Binding("d,escape", "detach", "Detach"),
    ]

    class Controlled(Message):
        """tunerd answered a control request."""

        def __init__(self, verb: str, answer: str, ok: bool):
            super().__init__()
            self.verb, self.answer, self.ok = verb, answer, ok

    def __init__(self, job: str, *, follow: bool = True):
        super().__init__()
        self.job = job
        self.model = JobView()   # the same fold `tunerd attach` draws
        self.follow = follow
        self.requests: list[str] = []
        self.opened = time.time()
        self.loss_steps: deque[int] = deque(maxlen=LOSS_POINTS)
        self.output_dir = ""
        self.link_detail = ""
        self.down_since: float | None = None   # when the link to tunerd went down (None: it is up)
        self.retries = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield JobFeed(self.job, id="feed")
        with Vertical(id="monitor"):
            yield Static(id="job-head")
            with Horizontal(id="progress-row"):
                yield ProgressBar(total=None, show_eta=False, id="progress")
                yield Label("", id="progress-label")
            yield Static(id="stats")
            with Horizontal(id="middle"):
                with Vertical(id="left"):
                    yield LossChart(id="loss")
                    yield MemoryGauges(id="memory")
                yield PixelImage("previews show here while a validation sample is drawn",
                                 id="preview")
            with Horizontal(id="validations"):
                for i in range(VALIDATION_SHOWN):
                    yield PixelImage("", id=f"val-{i}", classes="validation")
            yield RichLog(id="log", max_lines=500, wrap=True)
        yield FittedFooter()

    def on_mount(self) -> None:
        self.title = f"Monitor — {self.job}"
        self.render_head()
        if self.follow:
            self.query_one(JobFeed).start()

    def on_resize(self, event) -> None:
        # A short terminal gives the log the room: smaller preview and validation images.
        self.set_class(event.size.height < COMPACT_BELOW, "-compact")

    # -- the stream ------------------------------------------------------------------------

    @on(JobFeed.Progress)
    @on(JobFeed.Event)
    def event(self, message: JobFeed.Event) -> None:
        # A coalesced Progress brings the events of the messages it replaced: fold them all in.
        events = message.take() if isinstance(message, JobFeed.Progress) else [message.event]
        for event in events:
            if event.get("type") == "progress" and isinstance(event.get("loss"), (int, float)):
                self.loss_steps.append(event.get("step") or 0)   # the chart's step axis, beside the fold's losses
            line = self.model.apply(event, message.stream)
            if line:
                self.query_one(RichLog).write(self._styled(line))
        kind = message.event.get("type")
        if kind == "progress":
            self.render_progress()
        elif kind == "memory":
            self.query_one(MemoryGauges).show(self.model.gpu_memory, self.model.engine_memory, self.model.rss)
        elif kind == "preview":
            self.render_preview()
        elif kind == "validation":
            self.render_validations()
        elif kind == "cache":
            c = self.model.cache
            self.query_one("#stats", Static).update(
                f"caching {c.get('dataset')} {c.get('kind', '')}: {c.get('done')}/{c.get('total')}")
        if kind == "status" or message.stream == "daemon":
            self.render_head()

    @on(JobFeed.Ended)
    def ended(self, message: JobFeed.Ended) -> None:
        self.query_one(RichLog).write(self._styled(self.model.end(message.job)))
        self.output_dir = message.job.get("output_dir") or ""
        self.render_head()
        # Only an end seen happen: attaching to a job that ended long ago is no news.
        if (message.job.get("updated") or 0) >= self.opened:
            self.notify(f"{self.job} {self.model.state}", title="Job ended")

    @on(JobFeed.Connection)
    def connection(self, message: JobFeed.Connection) -> None:
        # The link's state is one line in the head, updated in place; the log gets its going and coming once.
        log = self.query_one(RichLog)
        if message.connected:
            if self.down_since is not None:
                log.write(Text(f"tunerd is back after {duration(time.time() - self.down_since)}", style="green"))
            self.down_since, self.retries = None, 0
            self.sub_title = ""
        else:
            if self.down_since is None:
                self.down_since = time.time()
                log.write(Text(message.detail, style="yellow"))
            self.retries += 1
            self.link_detail = message.detail
            self.sub_title = "tunerd unreachable"
        self.render_head()

    @staticmethod
    def _styled(line: str) -> Text:
        style = "red" if line.startswith("error") else "yellow" if line.startswith("warning") else ""
        return Text(line, style=style)

    # -- rendering -------------------------------------------------------------------------

    def render_head(self) -> None:
        m = self.model
        state = (m.state or "?") + ("?" if self.down_since is not None else "")
        text = Text.assemble((f"{self.job}  ", "bold"), (state, "bold reverse"), f"  phase {m.phase or '-'}")
        if m.reason:
            text.append(f"  {m.reason}", style="dim")
        if self.down_since is not None:
            text.append(f"\n⚠ tunerd unreachable for {duration(time.time() - self.down_since)}, reconnecting "
                        f"(try {self.retries}); the state and ETA shown are the last known", style="yellow")
        if m.errors:
            text.append(f"\n✗ {m.errors[-1]}", style="red")
        pipeline = m.result.get("pipeline") or (f"{self.output_dir}/pipeline" if m.state == p.DONE and
                                                 self.output_dir else "")
        if pipeline:
            text.append(f"\n✓ weights: {pipeline}", style="bold green")
        elif m.ended and m.checkpoint.get("path"):
            text.append(f"\nlast checkpoint: {m.checkpoint['path']}"
                        + ("  (r resumes from it)" if m.state in RESUMABLE else ""), style="dim")
        self.query_one("#job-head", Static).update(text)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The footer offers what the job's state allows: controls while it runs, Resume once it ended.
        if action in ("stop", "control"):
            return self.model.state in p.ACTIVE_STATES and not self.model.ended
        if action == "resume":
            return self.model.state in RESUMABLE and self.model.ended
        return True

    def render_progress(self) -> None:
        m = self.model
        pr = m.progress
        bar = self.query_one(ProgressBar)
        bar.update(total=max(m.total, 1), progress=m.step)
        self.query_one("#progress-label", Label).update(f" step {m.step}/{m.total}  ETA {duration(m.eta_s)}")
        parts = [f"epoch {pr.get('epoch', '-')}"]
        for key, fmt, name in (("lr", "{:.2e}", "lr"), ("grad_norm", "{:.3f}", "grad norm"),
                               ("steps_per_s", "{:.2f}", "it/s"), ("samples_per_s", "{:.1f}", "samples/s")):
            value = pr.get(key)
            parts.append(f"{name} {fmt.format(value)}" if isinstance(value, (int, float)) else f"{name} -")
        self.query_one("#stats", Static).update("   ".join(parts))
        self.query_one(LossChart).update_losses(self.model.losses, self.loss_steps)

    def render_preview(self) -> None:
        ev = self.model.preview
        image = self.query_one("#preview", PixelImage)
        image.path = ev.get("path")
        image.caption = f"preview {ev.get('k')}/{ev.get('n')} · {ev.get('nickname') or ev.get('prompt', '')}"

    def render_validations(self) -> None:
        # Hidden until the first sample, so the log gets the room on small terminals.
        self.query_one("#validations").display = True
        latest = self.model.latest_validations(VALIDATION_SHOWN)
        for i, widget in enumerate(self.query(".validation").results(PixelImage)):
            if i < len(latest):
                nick, ev = latest[i]
                paths = ev.get("paths") or []
                widget.path = paths[0] if paths else None
                widget.caption = f"{nick} · step {ev.get('step')}"

    # -- actions ---------------------------------------------------------------------------

    def action_stop(self) -> None:
        from tuner.tui.screens.confirm import Confirm

        def answered(yes: bool | None) -> None:
            if yes:
                self.action_control("stop_job")

        self.app.push_screen(Confirm(f"Stop {self.job}? It saves a checkpoint first; resume it later from Home."),
                             answered)

    def action_control(self, verb: str) -> None:
        self.requests.append(verb)
        self.send_control(verb)

    def action_resume(self) -> None:
        self.action_control("resume")

    @work(group="control")
    async def send_control(self, verb: str) -> None:
        try:
            reply = await daemon_link.request(verb, job=self.job)
            self.post_message(self.Controlled(verb, reply.get("message") or CONTROLS[verb], True))
        except (p.DaemonNotRunning, p.RequestFailed, ConnectionError, OSError) as e:
            self.post_message(self.Controlled(verb, str(e), False))

    @on(Controlled)
    def controlled(self, message: Controlled) -> None:
        self.notify(message.answer, title=CONTROLS[message.verb], severity="information" if message.ok else "error")
        self.query_one(RichLog).write(Text(f"{message.verb}: {message.answer}", style="" if message.ok else "red"))
        if message.verb == "resume" and message.ok:
            # A new run: follow it from where the stream stopped.
            self.model.ended, self.model.state = False, p.QUEUED
            self.render_head()
            if self.follow:
                self.query_one(JobFeed).start()

    def action_detach(self) -> None:
        self.app.pop_screen()
