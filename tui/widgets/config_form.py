"""Form rows for config keys: the right input per field type, labelled and explained by field_info."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Switch

from tuner.engine.config import field_info


def _text(value: Any) -> str:
    return "" if value is None else str(value)


class ConfigField(Horizontal):
    """One config key: its name, an input that suits its type, and its description as the tooltip."""

    DEFAULT_CSS = """
    ConfigField { height: auto; }
    ConfigField > Label { width: 30; padding: 0 1 0 0; }
    ConfigField > Switch { border: none; height: 1; padding: 0; }
    ConfigField > Input, ConfigField > Select { width: 1fr; }
    """

    def __init__(self, model: type[BaseModel], key: str, value: Any, *, label: str | None = None,
                 choices: list[Any] | None = None):
        super().__init__(id=f"field-{key}")
        self.key = key
        self.info = field_info(model, key)
        self.label = label or key
        self.initial = value if value is not None else self.info["default"]
        self.choices = choices or self.info["choices"]

    def compose(self) -> ComposeResult:
        yield Label(self.label)
        help_text = self.info["description"]
        if self.info["type"].startswith("bool"):
            widget: Widget = Switch(value=bool(self.initial), id=f"in-{self.key}")
        elif self.choices:
            options = [(str(c), c) for c in self.choices]
            value = self.initial if self.initial in self.choices else Select.NULL
            widget = Select(options, value=value, allow_blank=self.initial not in self.choices, compact=True, id=f"in-{self.key}")
        else:
            widget = Input(_text(self.initial), placeholder=f"default: {_text(self.info['default']) or 'unset'}",
                           compact=True, id=f"in-{self.key}")
        widget.tooltip = help_text
        yield widget

    @property
    def value(self) -> Any:
        """The entered value: bool, a choice, or text (None when left empty)."""
        widget = self.query_one(f"#in-{self.key}")
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return None if widget.value is Select.NULL else widget.value
        text = widget.value.strip()
        return text or None


def form_values(root: Widget) -> dict[str, Any]:
    """Every ConfigField under `root`, as {key: value}."""
    return {f.key: f.value for f in root.query(ConfigField)}
