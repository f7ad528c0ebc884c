"""The config keys the review finds a problem with that no wizard step has a field for, each with its fix
here: rename it to the key the engine suggests, or remove it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Static

from tuner.tui.widgets.field_row import brief

_SUGGESTION = re.compile(r"did you mean '([^']+)'\?")


@dataclass
class LooseKey:
    """One key without a field: its value, the problem, and the key it was probably meant to be."""

    key: str
    value: Any
    level: str
    message: str

    @property
    def suggestion(self) -> str | None:
        match = _SUGGESTION.search(self.message)
        return match.group(1) if match else None


class LooseKeys(Vertical):
    """One row per loose key: what is wrong, [rename to …] when the engine has a suggestion, [remove]."""

    DEFAULT_CSS = """
    LooseKeys { height: auto; display: none; padding: 0 1; }
    LooseKeys.-shown { display: block; }
    LooseKeys > Horizontal { height: auto; }
    LooseKeys .loose-what { width: 1fr; }
    LooseKeys Button { margin: 0 0 0 1; }
    """

    class Fixed(Message):
        """The user renamed a key (`to` is its new name) or removed it (`to` is None)."""

        def __init__(self, key: str, to: str | None):
            super().__init__()
            self.key, self.to = key, to

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.keys: list[LooseKey] = []

    async def show(self, keys: list[LooseKey], renamable: set[str]) -> None:
        """Replace the rows; a suggestion is offered only when it names a key the user has not set yet."""
        self.keys = keys
        await self.remove_children()
        rows = []
        for n, loose in enumerate(keys):
            mark, style = ("✗", "red") if loose.level == "error" else ("!", "yellow")
            what = Text(f"{mark} {loose.key} = {loose.value!r}: ", style=style)
            what.append(brief(loose.message))
            buttons = [Static(what, classes="loose-what")]
            if loose.suggestion in renamable:
                buttons.append(Button(f"rename to {loose.suggestion}", id=f"rename-{n}", variant="primary", compact=True))
            buttons.append(Button("remove", id=f"remove-{n}", compact=True))
            rows.append(Horizontal(*buttons))
        if rows:
            await self.mount(Static(Text("Keys no step has a field for (Tab reaches the buttons):", style="bold")),
                             *rows)
        self.set_class(bool(rows), "-shown")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        action, _, n = (event.button.id or "").partition("-")
        loose = self.keys[int(n)]
        self.post_message(self.Fixed(loose.key, loose.suggestion if action == "rename" else None))
