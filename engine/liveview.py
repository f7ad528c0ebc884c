"""A rich live view of a job's event stream: state, progress, loss, lr, speed, ETA, memory, the
latest preview and validation samples (as files and as pictures), the last log lines. Torch-free: `tuner train` feeds it the
engine's events directly, `tunerd attach` the daemon's subscription messages; both are folded by
the same `JobView` the TUI's monitor uses, so this file only draws."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from tuner.engine.event_fold import JobView, duration
from tuner.engine.thumbnails import half_blocks

SPARK = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 48
VALIDATIONS_SHOWN = 3
PICTURE_WIDTH = 20  # columns per picture: three samples and a preview fit 100 columns


def _size(n: float | None) -> str:
    if not isinstance(n, (int, float)) or n <= 0:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """The values averaged into `width` buckets, as block characters from lowest to highest."""
    values = list(values)
    if not values:
        return ""
    buckets = [values[i * len(values) // width:(i + 1) * len(values) // width] for i in range(width)]
    means = [sum(b) / len(b) for b in buckets if b]
    low, high = min(means), max(means)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((m - low) / span * len(SPARK)))] for m in means)


class LiveView:
    """Draws a `JobView` as one rich panel; `feed`/`feed_message` fold events into it."""

    def __init__(self, title: str = "tuner", subtitle: str | None = None, log_lines: int = 8, pictures: bool = True):
        self.pictures = pictures
        self.title = title
        self.subtitle = subtitle
        self.log_lines = log_lines
        self.job = JobView()

    def feed_message(self, message: dict[str, Any]) -> None:
        """One message of a tunerd subscription (engine or daemon stream, or the end)."""
        self.job.apply_message(message)

    def feed(self, event: dict[str, Any]) -> None:
        """One engine event (a line of events.jsonl), as `tuner train` hands them over."""
        self.job.apply(event)

    def __rich__(self) -> Panel:
        j = self.job
        p = j.progress
        phase = j.phase or "starting"
        # The daemon's job state leads when it says more than the engine's phase.
        state = [(j.state, "bold"), "  "] if j.state and j.state != phase else []
        reason = [("  " + j.reason, "dim")] if j.reason and j.reason not in j.message else []
        head = Text.assemble(*state, (phase, "bold cyan"), "  ", j.message, *reason)
        bar = Table.grid(expand=True)
        bar.add_column(ratio=1)
        bar.add_column(justify="right")
        bar.add_row(ProgressBar(total=max(j.total, 1), completed=j.step), f" {j.step}/{j.total}")
        stats = Table.grid(padding=(0, 2))
        stats.add_row("loss", _number(p.get("loss"), ".4f"), "lr", _number(p.get("lr"), ".2e"))
        if j.losses:
            stats.add_row("", Text(sparkline(j.losses), style="cyan"),
                          "low", f"{min(j.losses):.4f} over {len(j.losses)} reports")
        stats.add_row("speed", f"{_number(p.get('steps_per_s'), '.2f')} it/s, {_number(p.get('samples_per_s'), '.1f')} img/s",
                      "ETA", duration(j.eta_s))
        stats.add_row("epoch", str(p.get("epoch", "-")), "RSS", _size(j.rss))
        for dev in j.engine_memory:
            stats.add_row(str(dev.get("name", "gpu")), f"{_size(dev.get('allocated'))} allocated",
                          "peak", _size(dev.get("peak")))
        for dev in j.gpu_memory:
            stats.add_row(f"GPU {dev.get('device', '')} {dev.get('name', '')}", f"{_size(dev.get('used'))} used",
                          "of", _size(dev.get("total")))
        if j.phase == "caching" and j.cache:
            stats.add_row("cache", f"{j.cache.get('dataset')} {j.cache.get('kind')}",
                          "", f"{j.cache.get('done')}/{j.cache.get('total')}")
        files = Table.grid(padding=(0, 2))
        files.add_column(style="dim")
        files.add_column()
        if j.preview:
            files.add_row("preview", f"{j.preview.get('path')}  ({j.preview.get('k')}/{j.preview.get('n')})")
        for nickname, event in j.latest_validations(VALIDATIONS_SHOWN):
            paths = event.get("paths") or []
            files.add_row("validation", f"{paths[0] if paths else '-'}  ({nickname}, step {event.get('step')})")
        if j.checkpoint:
            files.add_row("checkpoint", f"step {j.checkpoint.get('step')}: {j.checkpoint.get('path')}")
        logs = Text("\n".join(list(j.log)[-self.log_lines:]), style="dim")
        parts = [head, bar, stats, files]
        if self.pictures:
            parts.append(self._pictures())
        return Panel(Group(*parts, logs), title=self.title, subtitle=self.subtitle,
                     border_style="red" if j.errors else "cyan")

    def _pictures(self) -> Table:
        """The latest validation samples (a video's still strip) and the preview, drawn in the terminal."""
        shown = []
        for nickname, event in self.job.latest_validations(VALIDATIONS_SHOWN):
            image = next((path for path in event.get("paths") or [] if str(path).endswith(".png")), None)
            picture = half_blocks(image, PICTURE_WIDTH) if image else None
            if picture is not None:
                shown.append((picture, f"{nickname}, step {event.get('step')}"))
        if self.job.preview and self.job.preview.get("path"):
            picture = half_blocks(self.job.preview["path"], PICTURE_WIDTH)
            if picture is not None:
                shown.append((picture, f"preview {self.job.preview.get('k')}/{self.job.preview.get('n')}"))
        grid = Table.grid(padding=(0, 2))
        if shown:
            grid.add_row(*(picture for picture, _ in shown))
            grid.add_row(*(Text(caption, style="dim", overflow="ellipsis", no_wrap=True) for _, caption in shown))
        return grid
