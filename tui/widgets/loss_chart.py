"""The loss over the run as a sparkline, with its last, lowest and first values."""
from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline


class LossChart(Vertical):
    """A sparkline of recent losses (averaged into the width) and a one-line summary."""

    DEFAULT_CSS = """
    LossChart { height: auto; }
    LossChart Sparkline { height: 4; }
    """

    def compose(self) -> ComposeResult:
        yield Label("loss: waiting for the first step", id="loss-label")
        yield Sparkline([], summary_function=max, id="loss-spark")

    def update_losses(self, losses: Sequence[float]) -> None:
        values = list(losses)
        self.query_one(Sparkline).data = values
        if values:
            self.query_one("#loss-label", Label).update(
                f"loss {values[-1]:.4f} · low {min(values):.4f} · {len(values)} steps")
