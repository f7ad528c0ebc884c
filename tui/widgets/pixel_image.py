"""An image drawn with half-block characters (two pixels per cell), readable in every terminal."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class HalfBlocks:
    """A rich renderable: an RGB image as rows of '▀' with the top pixel as foreground, the bottom as background."""

    def __init__(self, image: Image.Image):
        self.image = image.convert("RGB")

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        img = self.image
        width, height = img.size
        pixels = img.load()
        for y in range(0, height - 1, 2):
            for x in range(width):
                top, bottom = pixels[x, y], pixels[x, y + 1]
                yield Segment("▀", Style(color=f"rgb{top}", bgcolor=f"rgb{bottom}"))
            yield Segment.line()


def fit(image: Image.Image, cells_w: int, cells_h: int) -> Image.Image:
    """The image scaled to fit cells_w × (2 × cells_h) pixels, keeping its aspect."""
    scale = min(cells_w / image.width, 2 * cells_h / image.height)
    w = max(1, int(image.width * scale))
    h = max(2, int(image.height * scale) // 2 * 2)
    return image.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)


class PixelImage(Widget):
    """Shows the PNG at `path` scaled to the widget; a caption line under it says what it is."""

    DEFAULT_CSS = "PixelImage { height: 9; }"
    path: reactive[str | None] = reactive(None)
    caption: reactive[str] = reactive("")

    def __init__(self, empty: str = "no image yet", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.empty = empty
        self._cache: tuple[tuple, Image.Image] | None = None

    def _load(self) -> Image.Image | str:
        path = Path(self.path or "")
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size)
            if self._cache is None or self._cache[0] != key:
                with Image.open(path) as img:
                    img.load()
                    self._cache = (key, img.copy())
            return self._cache[1]
        except (OSError, UnidentifiedImageError) as e:
            # A preview may be replaced while we read it; say so and draw the next one.
            return f"cannot read {path.name}: {e.__class__.__name__}"

    def render(self):
        if not self.path:
            return Text(self.empty, style="dim")
        loaded = self._load()
        if isinstance(loaded, str):
            return Text(loaded, style="dim")
        image = fit(loaded, max(1, self.size.width), max(1, self.size.height - 1))
        return Group(HalfBlocks(image), Text(self.caption, style="dim", overflow="ellipsis", no_wrap=True))
