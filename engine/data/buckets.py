"""Aspect buckets: the training size of each image, aligned to the family's latent grid.

SimpleTuner's semantics: without `crop` an image keeps its aspect; with `crop`, `crop_aspect`
square trains at resolution×resolution, preserve keeps the aspect, closest takes the nearest of
`crop_aspect_buckets` and random draws one of them (per image, seeded, so caches stay valid).
"""
from __future__ import annotations

import math
import random

from tuner.engine.data.errors import DataError
from tuner.engine.data.sizing import target_area

CROP_ASPECTS = ("square", "preserve", "closest", "random")


def align(value: float, alignment: int) -> int:
    """`value` rounded to the nearest multiple of `alignment` (never below one step)."""
    return max(alignment, int(round(value / alignment)) * alignment)


def size_for_aspect(aspect: float, resolution: float, resolution_type: str, alignment: int) -> tuple[int, int]:
    """The aligned (width, height) for an aspect ratio (width / height) at the dataset resolution."""
    area = target_area(resolution, resolution_type)
    if area is None:  # pixel: the shorter edge is the resolution
        if aspect >= 1:
            w, h = resolution * aspect, resolution
        else:
            w, h = resolution, resolution / aspect
    else:
        w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    return align(w, alignment), align(h, alignment)


def parse_aspect_buckets(raw, dataset_id: str) -> list[tuple[float, float]]:
    """`crop_aspect_buckets` as (aspect, weight) pairs; entries are numbers or {aspect_bucket, weight}."""
    out = []
    for item in raw or ():
        if isinstance(item, dict):
            aspect = item.get("aspect_bucket", item.get("aspect"))
            weight = item.get("weight", 1.0)
        else:
            aspect, weight = item, 1.0
        try:
            aspect, weight = float(aspect), float(weight)
        except (TypeError, ValueError):
            raise DataError(f"dataset {dataset_id!r}: crop_aspect_buckets entry {item!r} is not an aspect "
                            f"ratio (width/height, e.g. 0.75, 1.0, 1.5)") from None
        if aspect <= 0 or weight < 0:
            raise DataError(f"dataset {dataset_id!r}: crop_aspect_buckets entry {item!r} must be positive")
        out.append((aspect, weight))
    return out


def choose_aspect(width: int, height: int, crop: bool, crop_aspect: str,
                  buckets: list[tuple[float, float]], rng: random.Random, dataset_id: str) -> float:
    """The aspect ratio an image trains at."""
    image_aspect = width / height
    if not crop or crop_aspect == "preserve":
        return image_aspect
    if crop_aspect == "square":
        return 1.0
    if crop_aspect not in CROP_ASPECTS:
        raise DataError(f"dataset {dataset_id!r}: crop_aspect {crop_aspect!r} is not one of "
                        f"{', '.join(CROP_ASPECTS)}")
    if not buckets:
        raise DataError(f"dataset {dataset_id!r}: crop_aspect {crop_aspect!r} needs a "
                        f"crop_aspect_buckets list, e.g. [0.75, 1.0, 1.33]")
    if crop_aspect == "closest":
        # Log distance: 2:1 and 1:2 are equally far from square.
        return min(buckets, key=lambda b: abs(math.log(b[0] / image_aspect)))[0]
    aspects = [b[0] for b in buckets]
    weights = [b[1] for b in buckets]
    if sum(weights) <= 0:
        weights = [1.0] * len(aspects)
    return rng.choices(aspects, weights=weights, k=1)[0]
