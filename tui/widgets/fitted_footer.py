"""A footer that fits the terminal: narrower than 100 columns it is compact and leaves out the palette's
key (Ctrl+P still opens it), so every key of the screen shows in 80 columns."""
from __future__ import annotations

from textual import events
from textual.widgets import Footer

WIDE = 100


class FittedFooter(Footer):
    """Footer, compact and without the palette key on narrow terminals."""

    def on_resize(self, event: events.Resize) -> None:
        narrow = event.size.width < WIDE
        if self.compact != narrow:
            self.compact = narrow
            self.show_command_palette = not narrow
            self.call_after_refresh(self.recompose)
