"""The dataset scan's findings: counts, source sizes, aspect buckets, and what would stop training."""
from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import Static

from tuner.tui.crash import Guarded
from tuner.tui.dataset_scan import ScanReport, scan_folder


class ScanPanel(Guarded, Static):
    """Scans in a thread worker and shows the report; the screen hears `Scanned` too."""

    class Scanned(Message):
        """A scan finished; `key` says which settings it was for."""

        def __init__(self, report: ScanReport, key: str):
            super().__init__()
            self.report, self.key = report, key

    def scan(self, dataset: dict[str, Any], config: dict[str, Any], processes: int, key: str) -> None:
        self.update(Text("scanning…", style="dim"))
        self.run_scan(dict(dataset), dict(config), processes, key)

    @work(thread=True, exclusive=True, group="scan")
    def run_scan(self, dataset: dict[str, Any], config: dict[str, Any], processes: int, key: str) -> None:
        self.post_message(self.Scanned(scan_folder(dataset, config, processes), key))

    def on_scan_panel_scanned(self, message: Scanned) -> None:
        self.update(render_report(message.report))


def render_report(r: ScanReport) -> Text:
    """The report as a few lines: what was found, how it buckets, and problems in colour."""
    text = Text()
    if r.found:
        text.append(f"{r.found} images, {r.usable} usable", style="bold")
        sizes = ", ".join(f"{w}×{h}" + (f" ({n})" if n > 1 else "") for (w, h), n in r.sizes.most_common(4))
        more = f" and {len(r.sizes) - 4} more sizes" if len(r.sizes) > 4 else ""
        text.append(f"   sizes: {sizes}{more}\n")
        buckets = ", ".join(f"{w}×{h}: {n}" for (w, h), n in sorted(r.buckets.items()))
        text.append(f"aspect buckets: {buckets or '-'}\n")
    for w in r.warnings:
        text.append(f"! {w}\n", style="yellow")
    for e in r.errors:
        text.append(f"✗ {e}\n", style="red")
    if r.suggested_repeats is not None:
        text.append(f"  Ctrl+R sets repeats to {r.suggested_repeats}\n", style="bold")
    if not r.errors and not r.warnings:
        text.append("✓ ready to train", style="green")
    return text
