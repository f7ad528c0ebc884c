"""Pictures in a plain terminal: an image drawn with half blocks, two pixel rows per character.

`tunerd attach` and `tuner train` show the latest validation samples and the preview this way,
as the TUI does, over ssh and in any terminal with 24-bit colour (rich reduces the colours where
the terminal has fewer). Torch-free: Pillow reads the file.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from rich.style import Style
from rich.text import Text

UPPER_HALF = "▀"


def half_blocks(path: str | Path, width: int = 24) -> Text | None:
    """The image at `path` as `width` columns of half blocks (None when it cannot be read)."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _render(str(path), stat.st_mtime_ns, stat.st_size, width)


@lru_cache(maxsize=32)
def _render(path: str, mtime_ns: int, size: int, width: int) -> Text | None:
    # Keyed by mtime and size too, so a file rewritten in place is drawn again.
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            w, h = image.size
            rows = max(2, round(width * h / w / 2) * 2)  # even: two pixel rows per line
            pixels = image.resize((width, rows), Image.Resampling.BOX).load()
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    text = Text()
    for y in range(0, rows, 2):
        for x in range(width):
            top, bottom = pixels[x, y], pixels[x, y + 1]
            text.append(UPPER_HALF, Style(color=f"rgb({top[0]},{top[1]},{top[2]})",
                                          bgcolor=f"rgb({bottom[0]},{bottom[1]},{bottom[2]})"))
        if y + 2 < rows:
            text.append("\n")
    return text
