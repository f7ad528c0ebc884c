"""Form rows for config keys: the right input per field type, labelled and explained by field_info."""
from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel
from textual.widget import Widget
from textual.widgets import Input, Select, Switch

from tuner.engine.config import field_info
from tuner.tui.widgets.field_row import FieldRow


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))   # a resolution of 1024, not 1024.0
    return "" if value is None else str(value)


def _input_for(key: str, info: dict[str, Any], initial: Any, choices: list[Any] | None) -> Widget:
    if info["type"].startswith("bool"):
        widget: Widget = Switch(value=initial is True or str(initial).strip().lower() in ("true", "yes", "1"),
                                id=f"in-{key}")
    elif choices:
        options = [(str(c), c) for c in choices]
        value = initial if initial in choices else Select.NULL
        widget = Select(options, value=value, allow_blank=initial not in choices, compact=True, id=f"in-{key}")
    else:
        widget = Input(_text(initial), placeholder=f"default: {_text(info['default']) or 'unset'}",
                       compact=True, id=f"in-{key}")
    widget.tooltip = info["description"]
    return widget


class ConfigField(FieldRow):
    """One config key: its name, an input that suits its type, and its description as the tooltip."""

    def __init__(self, model: type[BaseModel], key: str, value: Any, *, label: str | None = None,
                 choices: list[Any] | None = None):
        info = field_info(model, key)
        self.info = info
        self.was_set = value is not None
        self.initial = value if value is not None else info["default"]
        self.choices = choices or info["choices"]
        super().__init__(key, label or key, _input_for(key, info, self.initial, self.choices))

    def on_mount(self) -> None:
        self.start = self.value

    @property
    def touched(self) -> bool:
        """Whether the key belongs in the config: it was set, or the user changed the default shown."""
        return self.was_set or self.value != self.start

    @property
    def value(self) -> Any:
        """The entered value: bool, a choice, or text (None when left empty)."""
        widget = self.field
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return None if widget.value is Select.NULL else widget.value
        text = widget.value.strip()
        return text or None

    def own_problem(self) -> str | None:
        """What the engine's model accepts but no run can use: a number that is infinite or not a number."""
        value = self.value
        if isinstance(value, str) and self.info["type"].split(" ")[0] in ("float", "int"):
            try:
                number = float(value)
            except ValueError:
                return None   # the model's own message says what to type
            if not math.isfinite(number):
                return f"got {value!r}; expected a finite number"
        return None


def form_values(root: Widget) -> dict[str, Any]:
    """The ConfigFields under `root` that belong in the config, as {key: value}: a default the user left alone
    stays out, so it is not written into their file as if they had chosen it."""
    return {f.key: f.value for f in root.query(ConfigField) if f.touched}


def own_problems(root: Widget) -> dict[str, str]:
    """Every ConfigField under `root` whose value no run can use, as {key: what is wrong}."""
    return {f.key: problem for f in root.query(ConfigField) if (problem := f.own_problem())}
