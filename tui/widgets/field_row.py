"""A labelled input with, under it, what is wrong with its value: every wizard field is one of these."""
from __future__ import annotations

import re

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Label, Static, Switch

_LONG_QUOTE = re.compile(r"'([^']{40})[^']{20,}'")


def brief(message: str) -> str:
    """A message with any long quoted value cut short (the value itself is in the field)."""
    return _LONG_QUOTE.sub(lambda m: f"'{m.group(1)}…'", message)


class FieldRow(Vertical):
    """One field: its label, its input, and a problem line shown only while the value has one."""

    DEFAULT_CSS = """
    FieldRow { height: auto; }
    FieldRow > Horizontal { height: auto; }
    FieldRow .field-label { width: 30; padding: 0 1 0 0; }
    FieldRow Switch { border: none; height: 1; padding: 0; width: auto; }
    FieldRow Input, FieldRow Select { width: 1fr; }
    FieldRow > .field-problem { display: none; color: $text-error; padding: 0 0 0 30; }
    FieldRow.-invalid > .field-problem { display: block; }
    FieldRow.-invalid .field-label { color: $text-error; text-style: bold; }
    FieldRow .switch-state { width: auto; padding: 0 1; color: $text-muted; }
    FieldRow .switch-state.-on { color: $text-success; }
    /* Where the cursor is, in either theme: the row's label and the field itself in the accent colour
       (compact fields have no border for Textual's own focus style to show on). The rules name the
       Horizontal row itself: Textual restyles a focus change along the focused widget's ancestors. */
    FieldRow:focus-within > Horizontal { background: $accent 10%; }
    FieldRow:focus-within > Horizontal > .field-label { color: $text-accent; text-style: bold; }
    FieldRow Input:focus, FieldRow Switch:focus, FieldRow Select:focus > SelectCurrent {
        background-tint: $accent 35%;
    }
    """

    def __init__(self, key: str, label: str, field: Widget):
        super().__init__(id=f"field-{key}")
        self.key = key
        self.label = label
        self.field = field
        self.problem: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(self.label, classes="field-label")
            yield self.field
            if isinstance(self.field, Switch):
                yield Label(classes="switch-state")
        yield Static("", classes="field-problem")

    def on_mount(self) -> None:
        self._say_switch()

    @on(Switch.Changed)
    def _say_switch(self) -> None:
        """A switch says on or off in words beside it: its colours alone are easy to misread."""
        for state in self.query(".switch-state").results(Label):
            on_ = bool(self.field.value)
            state.update("on" if on_ else "off")
            state.set_class(on_, "-on")

    def mark(self, problem: str | None) -> None:
        """Show what is wrong with the value (None clears it)."""
        self.problem = problem
        self.set_class(bool(problem), "-invalid")
        self.query_one(".field-problem", Static).update(Text(f"✗ {brief(problem)}") if problem else "")
