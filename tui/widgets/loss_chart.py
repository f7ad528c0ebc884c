"""The loss over the run as a small bar chart with a value axis, a step axis and a legend."""
from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

EIGHTHS = " ▁▂▃▄▅▆▇█"
GUTTER = 8   # the value axis: "0.9000 ┤"


def columns(values: Sequence[float], width: int) -> list[float]:
    """The values averaged into at most `width` columns, oldest first."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        part = values[i * len(values) // width:(i + 1) * len(values) // width]
        out.append(sum(part) / len(part))
    return out


def number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.3g}"


class LossChart(Widget):
    """Losses reported so far (averaged into the width), the range they span, the steps they cover."""

    DEFAULT_CSS = """
    LossChart { height: 6; color: $accent; }
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.losses: list[float] = []
        self.steps: list[int] = []

    def update_losses(self, losses: Sequence[float], steps: Sequence[int] = ()) -> None:
        """Show these losses; `steps` are the steps they were reported at (for the step axis)."""
        self.losses, self.steps = list(losses), list(steps)
        self.refresh()

    def render(self) -> Text:
        if not self.losses:
            return Text("loss: waiting for the first step", style="dim")
        rows = max(1, self.size.height - 2)
        width = max(1, self.size.width - GUTTER)
        shown = columns(self.losses, width)
        low, high = min(shown), max(shown)
        span = (high - low) or 1.0
        # Each column's height in eighths of a row; the lowest still shows as a sliver.
        heights = [max(1, round((v - low) / span * rows * 8)) for v in shown]
        text = Text()
        for row in range(rows - 1, -1, -1):
            label = number(high) if row == rows - 1 else number(low) if row == 0 else ""
            text.append(f"{label:>{GUTTER - 2}} {'┤' if label else '│'}", style="dim")
            text.append("".join(EIGHTHS[min(8, max(0, h - row * 8))] for h in heights) + "\n")
        first, last = (f"step {self.steps[0]}", f"step {self.steps[-1]}") if self.steps else ("first", "latest")
        axis = "─" * max(1, len(shown) - len(first) - len(last))
        text.append(" " * (GUTTER - 1) + "└" + first + axis + last + "\n", style="dim")
        # The legend: what the bars are, then as much detail as the width holds.
        legend = ["━ loss", f"last {number(self.losses[-1])}", f"lowest {number(min(self.losses))}",
                  "per report" if len(shown) == len(self.losses) else
                  f"each bar the mean of {len(self.losses) / len(shown):.1f} reports"]
        while len(legend) > 1 and len(" · ".join(legend)) > self.size.width:
            legend.pop()
        text.append(legend[0], style="bold")
        text.append("".join(f" · {part}" for part in legend[1:]))
        return text
