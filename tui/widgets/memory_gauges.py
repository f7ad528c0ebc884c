"""Memory per GPU (NVML's used/total and the engine's allocated/peak) and the engine's RSS."""
from __future__ import annotations

from typing import Any

import psutil
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

BAR = 12


def gib(n: float | None) -> str:
    return f"{n / 2**30:.1f} GiB" if isinstance(n, (int, float)) else "-"


def bar(used: float, total: float, width: int = BAR) -> Text:
    """A text gauge coloured by how full it is."""
    frac = max(0.0, min(1.0, used / total)) if total else 0.0
    filled = round(frac * width)
    style = "green" if frac < 0.8 else "yellow" if frac < 0.95 else "red"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim") + Text(f" {frac:4.0%}")


class MemoryGauges(Static):
    """One gauge row per GPU, and the engine process's resident memory against the machine's RAM."""

    def show(self, gpus: list[dict[str, Any]], engine: list[dict[str, Any]], rss: int | None) -> None:
        table = Table.grid(padding=(0, 1))
        for i, reading in enumerate(gpus):
            label = f"GPU {reading.get('device', i)}"
            own = engine[i] if i < len(engine) else {}
            detail = f"{gib(reading.get('used'))[:-4]}/{gib(reading.get('total'))}"
            if own:
                detail += f"  peak {gib(own.get('peak'))}"
            table.add_row(label, bar(reading.get("used") or 0, reading.get("total") or 0), detail)
        if not gpus:
            for i, own in enumerate(engine):
                table.add_row(f"GPU {i}", Text(f"allocated {gib(own.get('allocated'))}  reserved "
                                               f"{gib(own.get('reserved'))}  peak {gib(own.get('peak'))}"))
        if rss is not None:
            total = psutil.virtual_memory().total
            table.add_row("RSS", bar(rss, total), f"{gib(rss)[:-4]}/{gib(total)} RAM")
        if not gpus and not engine and rss is None:
            table.add_row(Text("memory: no reading yet", style="dim"))
        self.update(table)
