"""Wizard step 7: the values entered, the engine's verdict on them, then the job files written and submitted."""
from __future__ import annotations

import shutil
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Input, Static, TabbedContent, TabPane

from tuner.daemon import protocol as p
from tuner.presets import load_preset
from tuner.tui import daemon_link
from tuner.tui.folders import short
from tuner.tui.screens.step import Problem, StepScreen
from tuner.tui.widgets.field_row import FieldRow, brief
from tuner.tui.widgets.path_input import PathInput
from tuner.engine.config import TrainConfig, job_files, write_job_files
from tuner.engine.jobdir import CONFIG
from tuner.tui.dataset_scan import scan_issues
from tuner.tui.screens.wizard import field_place, issue_place
from tuner.tui.widgets.loose_keys import LooseKey, LooseKeys
from tuner.tui.wizard_state import FILE_NAMES


def keep_originals(folder: Path, names: list[str]) -> list[Path]:
    """Copy each file about to be replaced to NAME.orig, the first time only, so the user's own files
    (SimpleTuner's `--` keys and all) are never lost; returns the copies made now."""
    kept = []
    for name in names:
        backup = folder / f"{name}.orig"
        if not backup.exists():
            shutil.copy2(folder / name, backup)
            kept.append(backup)
    return kept


class ReviewStep(StepScreen):
    """Shows config.json, multidatabackend.json and user_prompt_library.json with the values entered.

    What is written is job_files' output for the checked values: the same keys and values, with
    the paths made absolute and the companions named, exactly what tunerd will run.
    """

    INDEX = 6
    BODY = VerticalScroll
    BINDINGS = [
        Binding("ctrl+w", "write", "Write files", priority=True),
        Binding("ctrl+n", "next", "Write + submit", priority=True),
    ]

    class Checked(Message):
        """The engine's findings on the values shown, and the checked bundle (None on any error)."""

        def __init__(self, bundle, issues: list):
            super().__init__()
            self.bundle, self.issues = bundle, issues

    class Submitted(Message):
        """tunerd queued the job (or refused it: `error`)."""

        def __init__(self, job: str | None, error: str = "", not_running: bool = False):
            super().__init__()
            self.job, self.error, self.not_running = job, error, not_running

    def __init__(self, state):
        super().__init__(state)
        self.files = state.files()
        self.issues: list | None = None
        self.bundle = None

    def body(self) -> ComposeResult:
        output = Path(str(self.state.config.get("output_dir") or "output"))
        default = self.state.write_to or self.state.config_folder or str(output.parent / (output.name + "-config"))
        yield FieldRow("target", "Write the config to", PathInput(default, id="target"))
        yield Static(Text("checking…", style="dim"), id="verdict")
        yield LooseKeys(id="loose")
        with TabbedContent(id="files"):
            for name in FILE_NAMES:
                with TabPane(name, id=f"tab-{name.split('.')[0]}"):
                    yield Static(self._shown(name), id=f"show-{name.split('.')[0]}", classes="file")

    def _shown(self, name: str) -> Syntax:
        theme = "ansi_dark" if self.app.current_theme.dark else "ansi_light"
        return Syntax(self.files[name], "json", theme=theme, word_wrap=True)

    def on_mount(self) -> None:
        super().on_mount()
        self.run_check()

    @work(thread=True, exclusive=True, group="check")
    def run_check(self) -> None:
        bundle, issues = self.state.check()
        # The dataset scan's findings too: a batch size raised on Training may leave a bucket unfilled.
        scanned = scan_issues(self.state.pixel_datasets(), self.state.config, self.state.processes(), issues)
        if any(i.level == "error" for i in scanned):
            bundle = None
        self.post_message(self.Checked(bundle, sorted(issues + scanned, key=lambda i: i.level != "error")))

    @on(Checked)
    async def checked(self, message: Checked) -> None:
        self.bundle, self.issues = message.bundle, message.issues
        errors = [i for i in message.issues if i.level == "error"]
        # An opened folder's problem no field fixes is settled once the check stops finding it.
        live = {(i.file, i.key) for i in errors}
        self.state.found = [i for i in self.state.found
                            if field_place(i.file, i.key) is not None or (i.file, i.key) in live]
        # Each error a field fixes is marked there when the user goes back to its step.
        known = {(f.file, f.key, f.message) for f in self.state.found}
        self.state.found += [i for i in errors if field_place(i.file, i.key) is not None
                             and (i.file, i.key, i.message) not in known]
        loose = [LooseKey(i.key, self.state.config[i.key], i.level, i.message) for i in message.issues
                 if i.file == CONFIG and i.key in self.state.config and field_place(CONFIG, i.key) is None]
        renamable = {k for k in TrainConfig.model_fields if k not in self.state.config}
        await self.query_one(LooseKeys).show(loose, renamable)
        text = Text()
        if errors:
            text.append(f"✗ {len(errors)} error(s) — fix them before submitting\n", style="bold red")
        else:
            text.append("✓ check_bundle: no errors", style="bold green")
            text.append("\n" if message.issues else "")
        for issue in message.issues:
            text.append(f"{'✗' if issue.level == 'error' else '!'} {issue_place(issue)}: {brief(issue.message)}\n",
                        style="red" if issue.level == "error" else "yellow")
        if any(field_place(i.file, i.key) is not None for i in errors):
            text.append("Ctrl+B goes back; each error is marked at its field\n", style="dim")
        self.query_one("#verdict", Static).update(text)

    @on(LooseKeys.Fixed)
    def fix_loose(self, message: LooseKeys.Fixed) -> None:
        if message.key not in self.state.config:
            return   # a second press on a row already fixed
        value = self.state.config.pop(message.key)
        if message.to is not None:
            self.state.config[message.to] = value
            self.state.respelled[message.key] = message.to
        self.notify(f"{message.key} renamed to {message.to}" if message.to else f"{message.key} removed")
        self.files = self.state.files()
        for name in FILE_NAMES:
            self.query_one(f"#show-{name.split('.')[0]}", Static).update(self._shown(name))
        self.issues = None   # until the check of the changed values comes back
        self.run_check()

    def keep(self) -> None:
        self.state.write_to = self.query_one("#target", Input).value

    def _write(self) -> Path | None:
        if self.issues is None:
            self.show_problems([Problem("", "the check is still running")])
            return None
        if self.bundle is None:
            self.show_problems([Problem("", "the config has errors (listed above); go back and fix them")])
            return None
        target = Path(self.query_one("#target", Input).value.strip() or ".").expanduser().absolute()
        try:
            clash = [n for n in FILE_NAMES if (target / n).exists()]
            kept = keep_originals(target, clash)
            write_job_files(self.state.in_user_spelling(job_files(self.bundle, target)), target)
        except OSError as e:  # a folder that cannot be made or written (/proc/x, no permission, disk full)
            self.show_problems([Problem("target", f"cannot write the config to {short(target)}: {e.strerror or e}; "
                                                  "choose another folder")])
            return None
        self.state.config_folder = str(target)
        self.notify(f"wrote {', '.join(FILE_NAMES)} to {target}"
                    + (", in your own spelling (your -- keys and options kept)" if self.state.original else "")
                    + (f"; your originals are kept as {', '.join(p.name for p in kept)}" if kept else "")
                    + (f" (replaced {', '.join(clash)})" if clash else ""))
        self.show_problems([])
        return target

    def action_write(self) -> None:
        self._write()

    def action_next(self) -> None:
        target = self._write()
        if target is not None:
            self.submit(target)

    @work(exclusive=True, group="submit")
    async def submit(self, folder: Path) -> None:
        args = {"path": str(folder), "cwd": str(folder), "name": Path(self.state.config["output_dir"]).name}
        if self.state.preset and load_preset(self.state.preset).gpus == 0:
            args["gpus"] = 0  # a CPU preset must not wait for a GPU
        try:
            reply = await daemon_link.request("submit", **args)
        except p.DaemonNotRunning:
            self.post_message(self.Submitted(None, daemon_link.NOT_RUNNING, not_running=True))
            return
        except p.RequestFailed as e:
            self.post_message(self.Submitted(None, str(e)))
            return
        self.post_message(self.Submitted(reply["job"]["id"]))

    @on(Submitted)
    def submitted(self, message: Submitted) -> None:
        if message.job is not None:
            self.app.open_monitor(message.job, from_wizard=True)
            return
        if message.not_running:
            self.app.offer_daemon_start(then=lambda: self.submit(Path(self.state.config_folder)))
            return
        self.show_problems([Problem("", f"tunerd refused the job: {message.error}")])
