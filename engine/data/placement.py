"""Where an image lands: downsample, aspect bucket, resize to cover, crop box — one rule for the
image scan, the video scan and the wizard's preview of both. Torch-free."""
from __future__ import annotations

import random
from dataclasses import dataclass

from tuner.engine.data.buckets import choose_aspect, size_for_aspect
from tuner.engine.data.crops import cover_size, crop_box
from tuner.engine.data.sizing import SizeRule


@dataclass(frozen=True)
class Placement:
    """An image's path from its own size to the pixels it trains on."""

    downsampled: tuple[int, int]
    bucket: tuple[int, int]
    resized: tuple[int, int]
    box: tuple[int, int, int, int]


def place(width: int, height: int, *, size: SizeRule, crop: bool, crop_aspect: str,
          aspect_buckets: list[tuple[float, float]], crop_style: str, alignment: int, rng: random.Random,
          dataset_id: str) -> Placement:
    """The downsampled size, the aligned bucket, the covering size and the crop box of one image."""
    down = size.downsampled(width, height)
    aspect = choose_aspect(down[0], down[1], crop, crop_aspect, aspect_buckets, rng, dataset_id)
    bucket = size_for_aspect(aspect, size.resolution, size.resolution_type, alignment)
    resized = cover_size(down[0], down[1], *bucket)
    # Without `crop` only the rounding remainder is trimmed, so centre it whatever the style.
    box = crop_box(resized[0], resized[1], bucket[0], bucket[1], crop_style if crop else "center", rng)
    return Placement(down, bucket, resized, box)
