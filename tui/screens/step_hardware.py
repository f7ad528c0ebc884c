"""Wizard step 1: the GPUs, RAM and disk found here, or a planned machine to size the run for."""
from __future__ import annotations

import math
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.widgets import Input, Static, Switch

from tuner.engine.hardware import describe, probe
from tuner.tui.screens.step import Problem, StepScreen
from tuner.tui.widgets.field_row import FieldRow

MAX_VRAM_GB = 4096   # more than any accelerator has: a larger number is a typo
MAX_GPUS = 64


def hardware_table(hw: dict[str, Any]) -> Table:
    """The probe's findings as a table the user can read at a glance."""
    table = Table(title="Detected here" if hw.get("platform") != "planned" else "Planned machine", expand=True)
    for col in ("#", "GPU", "VRAM total", "VRAM free", "bf16"):
        table.add_column(col)
    for g in hw.get("gpus") or []:
        table.add_row(str(g["index"]), g["name"], f"{g['vram_total_gb']:.1f} GB", f"{g['vram_free_gb']:.1f} GB",
                      "yes" if g["bf16"] else "no")
    if not hw.get("gpus"):
        table.add_row("-", "no NVIDIA GPU: training would run on the CPU", "", "", "")
    ram = hw.get("ram_total_gb")
    disk = hw.get("disk_free_gb")
    table.caption = (f"RAM {ram:.1f} GB" if ram is not None else "RAM unknown") + "   " + \
        (f"disk {disk:.1f} GB free at {hw.get('disk_path')}" if disk is not None else "disk unknown")
    return table


def notes(hw: dict[str, Any] | None) -> str:
    """The probe's notes, one per line."""
    return "\n".join(f"note: {note}" for note in (hw or {}).get("notes", []))


def planned_defaults(hw: dict[str, Any] | None) -> tuple[str, str, bool]:
    """The planned machine's fields as the found one: VRAM per GPU, GPU count, bf16."""
    gpus = (hw or {}).get("gpus") or []
    return (f"{gpus[0]['vram_total_gb']:g}" if gpus else "24", str(len(gpus) or 1),
            all(g["bf16"] for g in gpus) if gpus else True)


class HardwareStep(StepScreen):
    """Shows the probe and lets the user plan for another machine (VRAM per GPU, GPU count, bf16)."""

    INDEX = 0

    class Probed(Message):
        """The hardware probe finished."""

        def __init__(self, hardware: dict[str, Any]):
            super().__init__()
            self.hardware = hardware

    def body(self) -> ComposeResult:
        if any(i.level == "error" for i in self.state.found):
            yield Static(self.found_text(), id="found", classes="note")
        hw = self.state.hardware
        yield Static(hardware_table(hw) if hw is not None else "probing GPUs…", id="hw-table")
        yield Static(notes(hw), id="hw-notes", classes="note")
        yield FieldRow("planned", "Plan for another machine", Switch(value=self.state.planned, id="planned"))
        vram, count, bf16 = planned_defaults(hw)
        off = not self.state.planned
        yield FieldRow("vram", "VRAM per GPU (GB)", Input(vram, compact=True, id="vram", disabled=off))
        yield FieldRow("gpus", "GPU count", Input(count, compact=True, id="gpus", disabled=off))
        yield FieldRow("bf16", "bf16 (Ampere or newer)", Switch(value=bf16, id="bf16", disabled=off))

    def found_text(self) -> Text:
        from tuner.tui.screens.wizard import found_summary

        errors = [i for i in self.state.found if i.level == "error"]
        return found_summary(self.state.config_folder, errors) if errors else \
            Text(f"{self.state.config_folder}: every problem it had is fixed", style="green")

    def on_mount(self) -> None:
        super().on_mount()
        if self.state.hardware is None:
            self.run_probe()

    def on_screen_resume(self) -> None:
        # Back from later steps: the opened folder's problems they fixed are gone from the list.
        for found in self.query("#found").results(Static):
            found.update(self.found_text())

    @work(thread=True, exclusive=True)
    def run_probe(self) -> None:
        self.post_message(self.Probed(probe(".")))

    @on(Probed)
    def probed(self, message: Probed) -> None:
        # Updated in place: rebuilding the step would drop its header while it is still being titled
        # (Textual's NoMatches 'HeaderTitle' when the wizard opened from the folder dialog).
        self.state.hardware = self.state.detected = message.hardware
        self.query_one("#hw-table", Static).update(hardware_table(message.hardware))
        self.query_one("#hw-notes", Static).update(notes(message.hardware))
        if not self.query_one("#planned", Switch).value:   # the planned fields start from what was found
            vram, count, bf16 = planned_defaults(message.hardware)
            self.query_one("#vram", Input).value, self.query_one("#gpus", Input).value = vram, count
            self.query_one("#bf16", Switch).value = bf16

    @on(Switch.Changed, "#planned")
    def planned_changed(self, event: Switch.Changed) -> None:
        for wid in ("#vram", "#gpus", "#bf16"):
            self.query_one(wid).disabled = not event.value

    def action_back(self) -> None:
        # The first step's Back leaves the wizard: ask first when that would lose what was entered.
        from tuner.tui.screens.confirm import Confirm

        self.keep()
        if not self.state.changed:
            self.app.pop_screen()
            return
        what = "your changes to " + self.state.config_folder if self.state.config_folder else "what you entered"
        self.app.push_screen(Confirm(f"Leave the wizard? {what[0].upper() + what[1:]} will be lost.",
                                     "Leave", "Stay"),
                             lambda leave: leave and self.app.pop_screen())

    def save(self) -> list[Problem]:
        self.state.planned = self.query_one("#planned", Switch).value
        if not self.state.planned:
            if self.state.detected is not None:
                self.state.hardware = self.state.detected
            return [] if self.state.hardware is not None else [Problem("", "the probe has not finished yet")]
        problems = []
        text = self.query_one("#vram", Input).value.strip()
        try:
            vram = float(text)
            if not (0 < vram <= MAX_VRAM_GB and math.isfinite(vram)):
                raise ValueError
        except ValueError:
            problems.append(Problem("vram", f"got {text!r}; give the GB of one GPU, above 0 and at most "
                                            f"{MAX_VRAM_GB}, e.g. 24"))
        text = self.query_one("#gpus", Input).value.strip()
        try:
            count = int(text)
            if not 0 <= count <= MAX_GPUS:
                raise ValueError
        except ValueError:
            problems.append(Problem("gpus", f"got {text!r}; give a whole number from 0 (the CPU) to {MAX_GPUS}"))
        if problems:
            return problems
        self.state.hardware = describe(vram, count, self.query_one("#bf16", Switch).value)
        self.query_one("#hw-table", Static).update(hardware_table(self.state.hardware))
        return []
