"""Wizard step 2: the model family, the checkpoint (hub id or local folder) and the training type."""
from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Select, Static

from tuner.engine import families
from tuner.tui.screens.step import StepScreen
from tuner.tui.widgets.path_input import PathInput
from tuner.tui.wizard_state import training_type, training_types


class ModelStep(StepScreen):
    """Family, model and the training types that family allows."""

    INDEX = 1

    def body(self) -> ComposeResult:
        family = self.state.family
        with Horizontal(classes="row"):
            yield Label("Model family", classes="label")
            yield Select([(card.label, card.name) for card in families.cards()], value=family, allow_blank=False,
                         compact=True, id="family")
        with Horizontal(classes="row"):
            yield Label("Model id or local folder", classes="label")
            yield PathInput(self.state.config.get("pretrained_model_name_or_path") or families.card(family).default_model,
                            id="model", placeholder="a Hugging Face id (org/name) or a diffusers folder")
        with Horizontal(classes="row"):
            yield Label("Training type", classes="label")
            yield self._types(family, training_type(self.state.config))
        yield Static("", id="model-help", classes="help")

    def _types(self, family: str, current: str) -> Select:
        options = training_types(family)
        value = current if current in dict(options) else options[0][0]
        return Select([(label, key) for key, label in options], value=value, allow_blank=False, compact=True, id="training")

    @on(Select.Changed, "#family")
    async def family_changed(self, event: Select.Changed) -> None:
        family = str(event.value)
        model = self.query_one("#model", PathInput)
        if model.value in {c.default_model for c in families.cards()}:
            model.value = families.card(family).default_model
        old = self.query_one("#training", Select)
        row = old.parent
        await old.remove()
        await row.mount(self._types(family, str(old.value)))
        self.query_one("#model-help", Static).update(families.card(family).note)

    def save(self) -> list[str]:
        family = str(self.query_one("#family", Select).value)
        model = self.query_one("#model", PathInput).value.strip()
        kind = str(self.query_one("#training", Select).value)
        if family != self.state.family:
            self.state.preset = None  # another family's preset no longer applies
        self.state.config["model_family"] = family
        self.state.config["pretrained_model_name_or_path"] = model
        if kind in dict(training_types(family)):
            self.state.set_training(kind)
        if not model:
            return ["Model: give a Hugging Face id (e.g. " + families.card(family).default_model + ") or a local folder"]
        looks_local = model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()
        if looks_local and not (Path(model).expanduser() / "model_index.json").is_file():
            return [f"Model: {model} is not a diffusers folder (no model_index.json there)"]
        return []
