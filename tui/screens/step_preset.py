"""Wizard step 3: pick a preset of the chosen family, ranked by how well it fits the hardware."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.widgets import OptionList, Static

from tuner.daemon.paths import data_dir
from tuner.engine import families
from tuner.engine.demo import demo_model
from tuner.engine.jobdir import CONFIG, DATABACKEND
from tuner.presets import NO_FIT
from tuner.presets.demo import DEMO_PRESET, demo_dataset, demo_parts, demo_validation
from tuner.tui.folders import short
from tuner.tui.screens.confirm import Confirm
from tuner.tui.screens.step import StepScreen
from tuner.tui.widgets.preset_picker import PresetPicker
from tuner.tui.wizard_state import training_type


class PresetStep(StepScreen):
    """Ranked presets; choosing one lays its keys over the config (later steps can still edit them)."""

    INDEX = 2

    def __init__(self, state):
        super().__init__(state)
        self.keep_edits: list[str] = []   # the user's edits to keep over the preset's values, as they answered

    def body(self) -> ComposeResult:
        yield Static(f"Presets for {families.card(self.state.family).label}, best fit first (↑↓ to look, Ctrl+N to take "
                    "the highlighted one)", classes="help")
        keep = self.state.config_folder or self.state.preset_declined
        yield PresetPicker(self.state.family, self.state.hardware or {},
                           self.state.preset or (PresetPicker.KEEP if keep else None), id="picker")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.action_next()

    def action_next(self) -> None:
        picker = self.query_one(PresetPicker)
        preset = picker.highlighted
        edited = self.state.edits_a_preset_resets(preset) \
            if preset is not None and preset.name != self.state.preset else []
        if not edited:
            super().action_next()
            return

        def answered(reset: bool | None) -> None:
            self.keep_edits = [] if reset else edited
            super(PresetStep, self).action_next()

        self.app.push_screen(Confirm(self.edits_question(preset, edited), yes="Use the preset's values",
                                     no="Keep mine"), answered)

    def edits_question(self, preset, edited: list[str]) -> str:
        """The question before a preset resets what the user set: each field by its step and label."""
        from tuner.tui.screens.wizard import field_place

        lines = []
        for key in edited:
            dataset, _, name = key.rpartition(".")
            file, value = (DATABACKEND, preset.dataset[name]) if dataset else (CONFIG, preset.config[key])
            place = field_place(file, key)
            where = f"{place[0]} › {place[1]}" + (f" ({dataset})" if dataset else "") if place else key
            current = next(d for d in self.state.pixel_datasets() if d["id"] == dataset)[name] if dataset \
                else self.state.config[key]
            lines.append(f"  • {where}: yours {current!r}, the preset's {value!r}")
        return (f"{preset.name} sets fields you changed:\n" + "\n".join(lines)
                + "\n\nUse the preset's values for them, or keep yours (the rest of the preset is taken either way)?")

    def keep(self) -> None:
        """Going back takes nothing: a preset is laid over the config only by Next, after asking."""

    def save(self) -> list[str]:
        picker = self.query_one(PresetPicker)
        self.state.preset_declined = picker.keep
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
            self.state.take_preset(preset, keep=self.keep_edits)
            self.keep_edits = []
            now = training_type(self.state.config)
            self.state.set_training(now)
            if now != kind:
                self.notify(f"{preset.name} trains {now}, not {kind}: the training type follows "
                            "the preset", title="Training type changed")
            if preset.name == DEMO_PRESET:
                self.use_demo_parts()
        if fit == NO_FIT:
            self.notify(f"{preset.name} does not fit this hardware; the run may run out of memory",
                        severity="warning")
        return []

    def use_demo_parts(self) -> None:
        """The demo preset trains the demo's tiny Sana on its generated shapes, as `tunerd demo` does:
        unless the user chose a model or a dataset folder, point at those (the model is built in the
        background, in a child process so this one never imports torch; it takes a few seconds)."""
        model, _ = demo_parts(data_dir() / "demo")
        said = []
        if not self.state.chose_model():
            self.state.config["pretrained_model_name_or_path"] = str(model)
            self.app.run_worker(lambda: self._build_demo_model(model), thread=True, group="demo-model")
            said.append(f"the demo's tiny Sana ({short(model)}, built now)")
        for dataset in self.state.pixel_datasets():
            if not str(dataset.get("instance_data_dir") or "").strip():
                dataset["instance_data_dir"] = str(demo_dataset(data_dir() / "demo"))
                said.append(f"on its generated shapes ({short(dataset['instance_data_dir'])})")
        if not self.state.config.get("validation_prompt") and not self.state.prompts:
            self.state.config["validation_prompt"], self.state.prompts = demo_validation()
            said.append("samples its shapes")
        if said:
            self.notify("The demo preset trains " + ", ".join(said) + "; each can be changed in its step.",
                        title="Demo model, dataset and prompts")

    def _build_demo_model(self, model: Path) -> None:
        try:
            demo_model(model, isolated=True)
        except Exception as e:   # a worker's error must not end the app: say it, the Model step can change it
            self.app.call_from_thread(self.app.notify, f"building the demo model failed: {e}", severity="error")
