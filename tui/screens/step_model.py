"""Wizard step 2: the model family, the checkpoint (hub id or local folder) and the training type."""
from __future__ import annotations

import re
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.widgets import Select, Static

from tuner.engine import families
from tuner.tui import folders
from tuner.tui.screens.step import Problem, StepScreen
from tuner.tui.widgets.field_row import FieldRow
from tuner.tui.widgets.path_input import PathInput
from tuner.tui.wizard_state import training_type, training_types

# A Hugging Face repo id: a name, or org/name, of letters, digits, '-', '_' and '.', at most 96 each.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")


class ModelStep(StepScreen):
    """Family, model and the training types that family allows."""

    INDEX = 1

    @classmethod
    def labels(cls) -> dict[str, str]:
        return {"model_family": "Model family", "pretrained_model_name_or_path": "Model id or local folder",
                "model_type": "Training type"}

    def body(self) -> ComposeResult:
        # An opened file may name a family no card has: the choice starts blank, and the field says so.
        known = self.state.family in {card.name for card in families.cards()}
        family = self.state.family if known else families.cards()[0].name
        yield FieldRow("model_family", "Model family",
                       Select([(card.label, card.name) for card in families.cards()],
                              value=family if known else Select.NULL, allow_blank=not known, compact=True,
                              id="family"))
        model = self.state.config.get("pretrained_model_name_or_path") or families.card(family).default_model
        yield FieldRow("pretrained_model_name_or_path", "Model id or local folder",
                       PathInput(str(model), id="model",
                                 placeholder="a Hugging Face id (org/name) or a diffusers folder"))
        yield FieldRow("model_type", "Training type", self._types(family, training_type(self.state.config)))
        yield Static("", id="model-help", classes="help")

    def _types(self, family: str, current: str) -> Select:
        options = training_types(family)
        value = current if current in dict(options) else options[0][0]
        return Select([(label, key) for key, label in options], value=value, allow_blank=False, compact=True, id="training")

    @on(Select.Changed, "#family")
    async def family_changed(self, event: Select.Changed) -> None:
        if event.value is Select.NULL:
            return
        family = str(event.value)
        model = self.query_one("#model", PathInput)
        if model.value in {c.default_model for c in families.cards()}:
            model.value = families.card(family).default_model
        old = self.query_one("#training", Select)
        row = old.parent
        await old.remove()
        new = self._types(family, str(old.value))
        await row.mount(new)
        self.query_one("#field-model_type", FieldRow).field = new
        self.query_one("#model-help", Static).update(families.card(family).note)

    def save(self) -> list[Problem]:
        if self.query_one("#family", Select).value is Select.NULL:
            return [Problem("model_family", f"got {self.state.family!r}; choose one of "
                                            f"{', '.join(card.name for card in families.cards())}")]
        family = str(self.query_one("#family", Select).value)
        model = self.query_one("#model", PathInput).value.strip()
        kind = str(self.query_one("#training", Select).value)
        if family != self.state.family:
            self.state.preset = None  # another family's preset no longer applies
        self.state.config["model_family"] = family
        self.state.config["pretrained_model_name_or_path"] = model
        if kind in dict(training_types(family)):
            self.state.set_training(kind)
        key = "pretrained_model_name_or_path"
        if not model:
            return [Problem(key, f"give a Hugging Face id (e.g. {families.card(family).default_model}) or a local folder")]
        looks_local = model.startswith(("/", ".", "~")) or folders.exists(model)
        if looks_local:
            if not folders.exists(Path(model) / "model_index.json"):
                return [Problem(key, f"{folders.short(model)} is not a diffusers folder (no model_index.json there)")]
            problem = families.mismatch(families.card(family), Path(model).expanduser())
            if problem:
                return [Problem(key, problem)]
        elif not HUB_ID.fullmatch(model):
            return [Problem(key, f"{model!r} is neither a folder here nor a Hugging Face id (org/name, e.g. "
                                 f"{families.card(family).default_model})")]
        return []
