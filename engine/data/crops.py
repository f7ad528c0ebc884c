"""Resize-to-cover and the crop box that cuts an image to its bucket size."""
from __future__ import annotations

import hashlib
import random

CROP_STYLES = ("center", "random", "corner")


def image_rng(seed: int | None, key: str) -> random.Random:
    """A generator fixed by the run seed and the image, so a random crop is the same every run."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def cover_size(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int]:
    """The smallest aspect-keeping size of an image that covers the target on both sides."""
    s = max(target_w / width, target_h / height)
    return max(target_w, round(width * s)), max(target_h, round(height * s))


def crop_box(width: int, height: int, target_w: int, target_h: int, style: str,
             rng: random.Random) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a target-sized window inside a width×height image."""
    spare_x, spare_y = width - target_w, height - target_h
    if spare_x < 0 or spare_y < 0:
        raise ValueError(f"crop {target_w}x{target_h} does not fit in {width}x{height}")
    if style == "center":
        left, top = spare_x // 2, spare_y // 2
    elif style == "random":
        left, top = rng.randint(0, spare_x), rng.randint(0, spare_y)
    elif style == "corner":  # SimpleTuner's corner crop keeps the top-left
        left, top = 0, 0
    else:
        raise ValueError(f"crop_style {style!r}; expected one of {CROP_STYLES}")
    return left, top, left + target_w, top + target_h
