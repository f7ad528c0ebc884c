"""Wizard step 1: the GPUs, RAM and disk found here, or a planned machine to size the run for."""
from __future__ import annotations

from typing import Any

from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, Static, Switch

from tuner.engine.hardware import describe, probe
from tuner.tui.screens.step import StepScreen


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


class HardwareStep(StepScreen):
    """Shows the probe and lets the user plan for another machine (VRAM per GPU, GPU count, bf16)."""

    INDEX = 0

    class Probed(Message):
        """The hardware probe finished."""

        def __init__(self, hardware: dict[str, Any]):
            super().__init__()
            self.hardware = hardware

    def body(self) -> ComposeResult:
        hw = self.state.hardware
        yield Static(hardware_table(hw) if hw is not None else "probing GPUs…", id="hw-table")
        for note in (self.state.hardware or {}).get("notes", []):
            yield Static(f"note: {note}", classes="note")
        with Horizontal(classes="row"):
            yield Label("Plan for another machine", classes="label")
            yield Switch(value=self.state.planned, id="planned")
        gpus = (self.state.hardware or {}).get("gpus") or []
        with Horizontal(classes="row"):
            yield Label("VRAM per GPU (GB)", classes="label")
            yield Input(f"{gpus[0]['vram_total_gb']:g}" if gpus else "24", compact=True, id="vram", disabled=not self.state.planned)
        with Horizontal(classes="row"):
            yield Label("GPU count", classes="label")
            yield Input(str(len(gpus) or 1), compact=True, id="gpus", disabled=not self.state.planned)
        with Horizontal(classes="row"):
            yield Label("bf16 (Ampere or newer)", classes="label")
            yield Switch(value=all(g["bf16"] for g in gpus) if gpus else True, id="bf16",
                         disabled=not self.state.planned)

    def on_mount(self) -> None:
        super().on_mount()
        if self.state.hardware is None:
            self.run_probe()

    @work(thread=True, exclusive=True)
    def run_probe(self) -> None:
        self.post_message(self.Probed(probe(".")))

    @on(Probed)
    def probed(self, message: Probed) -> None:
        self.state.hardware = self.state.detected = message.hardware
        self.refresh(recompose=True)

    @on(Switch.Changed, "#planned")
    def planned_changed(self, event: Switch.Changed) -> None:
        for wid in ("#vram", "#gpus", "#bf16"):
            self.query_one(wid).disabled = not event.value

    def save(self) -> list[str]:
        self.state.planned = self.query_one("#planned", Switch).value
        if not self.state.planned:
            if self.state.detected is not None:
                self.state.hardware = self.state.detected
            return [] if self.state.hardware is not None else ["the probe has not finished yet"]
        problems = []
        try:
            vram = float(self.query_one("#vram", Input).value)
            if vram <= 0:
                raise ValueError
        except ValueError:
            problems.append("VRAM per GPU: give a number of GB above 0, e.g. 24")
        try:
            count = int(self.query_one("#gpus", Input).value)
            if count < 0:
                raise ValueError
        except ValueError:
            problems.append("GPU count: give a whole number, 0 for the CPU")
        if problems:
            return problems
        self.state.hardware = describe(vram, count, self.query_one("#bf16", Switch).value)
        self.query_one("#hw-table", Static).update(hardware_table(self.state.hardware))
        return []
