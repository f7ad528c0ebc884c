"""Wizard step 3: pick a preset of the chosen family, ranked by how well it fits the hardware."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import OptionList, Static

from tuner.engine import families
from tuner.presets import NO_FIT
from tuner.tui.screens.step import StepScreen
from tuner.tui.widgets.preset_picker import PresetPicker
from tuner.tui.wizard_state import training_type


class PresetStep(StepScreen):
    """Ranked presets; choosing one lays its keys over the config (later steps can still edit them)."""

    INDEX = 2

    def body(self) -> ComposeResult:
        yield Static(f"Presets for {families.card(self.state.family).label}, best fit first (↑↓ to look, Ctrl+N to take "
                    "the highlighted one)", classes="help")
        yield PresetPicker(self.state.family, self.state.hardware or {}, self.state.preset,
                           allow_keep=bool(self.state.config_folder), id="picker")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_next()

    def save(self) -> list[str]:
        picker = self.query_one(PresetPicker)
        if picker.keep:
            self.state.preset = None
            return []
        preset = picker.highlighted
        if preset is None:
            return ["no preset for this family; add one to the presets folder"]
        fit = next(f for p, f, _ in picker.ranked if p.name == preset.name)
        if preset.name != self.state.preset:
            # Applied once per choice, so coming back here does not undo later steps' edits.
            kind = training_type(self.state.config)
            self.state.take_preset(preset)
            now = training_type(self.state.config)
            self.state.set_training(now)
            if now != kind:
                self.notify(f"{preset.name} trains {now}, not {kind}: the training type follows "
                            "the preset", title="Training type changed")
        if fit == NO_FIT:
            self.notify(f"{preset.name} does not fit this hardware; the run may run out of memory",
                        severity="warning")
        return []
