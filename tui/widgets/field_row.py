"""A labelled input with, under it, what is wrong with its value: every wizard field is one of these."""
from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Label, Static

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
        yield Static("", classes="field-problem")

    def mark(self, problem: str | None) -> None:
        """Show what is wrong with the value (None clears it)."""
        self.problem = problem
        self.set_class(bool(problem), "-invalid")
        self.query_one(".field-problem", Static).update(Text(f"✗ {brief(problem)}") if problem else "")
