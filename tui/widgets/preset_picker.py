"""The presets of one family ranked for a machine: fit, estimated VRAM against what it has, and notes."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from tuner.presets import FITS, NO_FIT, TIGHT, Preset, list_presets, rank_presets
from tuner.tui.crash import Guarded

MARKS = {FITS: ("✓ fits", "green"), TIGHT: ("! tight", "yellow"), NO_FIT: ("✗ does not fit", "red")}
TYPE_LABELS = {"full": "full", "lora": "LoRA"}


def vram_of(hardware: dict[str, Any]) -> float | None:
    gpus = hardware.get("gpus") or []
    return max((g["vram_total_gb"] for g in gpus), default=None)


class PresetPicker(Guarded, Vertical):
    """An option list of ranked presets and, under it, the highlighted one's description and notes."""

    DEFAULT_CSS = """
    PresetPicker { height: auto; }
    PresetPicker OptionList { height: auto; max-height: 12; }
    PresetPicker #preset-detail { height: auto; padding: 0 1; }
    """

    KEEP = "__keep__"

    def __init__(self, family: str, hardware: dict[str, Any], selected: str | None = None, **kwargs):
        """`selected`: the preset to highlight, KEEP for the "no preset" row, None for the best fit."""
        super().__init__(**kwargs)
        # Always offered: an opened config already has its settings, and a new one may want only its own.
        self.allow_keep = True
        self.errors: list = []
        self.ranked: list[tuple[Preset, str, str]] = rank_presets(list_presets(family, errors=self.errors), hardware)
        self.hardware = hardware
        self.selected = selected

    def compose(self) -> ComposeResult:
        have = vram_of(self.hardware)
        options = [Option(Text("  no preset: keep the settings as they are", style="italic"), id=self.KEEP)] \
            if self.allow_keep else []
        for preset, fit, _reason in self.ranked:
            mark, colour = MARKS[fit]
            kind = "LoKr" if preset.config.get("lora_type") == "lycoris" else TYPE_LABELS.get(preset.model_type, "?")
            est = f"~{preset.estimated_vram_gb:g} GB" + (f" of {have:.0f}" if have else "")
            gpus = f" ×{preset.gpus}" if preset.gpus > 1 else " CPU" if preset.gpus == 0 else ""
            label = Text.assemble((f"{mark:<15}", colour), (f"{preset.name:<28}", "bold"), f" {kind:<5}",
                                  f" {est}{gpus}")
            options.append(Option(label, id=preset.name))
        yield OptionList(*options, id="presets")
        yield Static("", id="preset-detail")
        for error in self.errors:
            yield Static(Text(f"skipped a broken preset: {error}", style="red"))

    def on_mount(self) -> None:
        names = ([self.KEEP] if self.allow_keep else []) + [p.name for p, _, _ in self.ranked]
        option_list = self.query_one(OptionList)
        if self.selected in names:
            option_list.highlighted = names.index(self.selected)
        else:   # the best fit, or the "no preset" row when the family has none
            option_list.highlighted = min(1, len(names) - 1)

    @property
    def keep(self) -> bool:
        """Whether 'keep the settings' is highlighted."""
        return self.allow_keep and self.query_one(OptionList).highlighted == 0

    @property
    def highlighted(self) -> Preset | None:
        index = self.query_one(OptionList).highlighted
        if index is None or self.keep or not self.ranked:
            return None
        return self.ranked[index - self.allow_keep][0]

    @on(OptionList.OptionHighlighted)
    def show_detail(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_id == self.KEEP:
            self.query_one("#preset-detail", Static).update(
                "No preset: the settings stay as they are (the defaults, an opened config's values, your edits).")
            return
        preset, fit, reason = self.ranked[event.option_index - self.allow_keep]
        text = Text()
        text.append(preset.description + "\n", style="bold")
        text.append(f"{fit}: {reason}\n", style=MARKS[fit][1])
        for key in ("speed", "vram", "other"):
            if preset.notes.get(key):
                text.append(f"{key}: ", style="bold")
                text.append(preset.notes[key] + "\n")
        self.query_one("#preset-detail", Static).update(text)
