"""Image size rules: the three resolution units, minimum/maximum sizes and the pre-crop downsample.

Units follow SimpleTuner: `pixel` measures the shorter edge, `area` megapixels (10⁶ px), and
`pixel_area` an area given as an edge length (1024 → 1024² px). minimum_image_size,
maximum_image_size and target_downsample_size use the dataset's unit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tuner.engine.data.errors import DataError

if TYPE_CHECKING:
    from tuner.engine.config import DatasetConfig, TrainConfig

RESOLUTION_TYPES = ("pixel", "area", "pixel_area")
MEGAPIXEL = 1_000_000


def measure(width: int, height: int, resolution_type: str) -> float:
    """An image's size in the unit of `resolution_type`."""
    if resolution_type == "pixel":
        return float(min(width, height))
    if resolution_type == "area":
        return width * height / MEGAPIXEL
    if resolution_type == "pixel_area":
        return math.sqrt(width * height)
    raise ValueError(f"resolution_type {resolution_type!r}; expected one of {RESOLUTION_TYPES}")


def scale_to(width: int, height: int, value: float, resolution_type: str) -> float:
    """The factor that makes an image measure `value` in the unit of `resolution_type`."""
    if resolution_type == "area":
        return math.sqrt(value * MEGAPIXEL / (width * height))
    return value / measure(width, height, resolution_type)


def target_area(resolution: float, resolution_type: str) -> float | None:
    """The training area in px² for area units, None for `pixel` (where the shorter edge is fixed)."""
    if resolution_type == "area":
        return resolution * MEGAPIXEL
    if resolution_type == "pixel_area":
        return float(resolution) ** 2
    return None


@dataclass(frozen=True)
class SizeRule:
    """One dataset's size settings, already merged with the global resolution."""

    resolution: float
    resolution_type: str = "pixel"
    minimum_image_size: float | None = None
    maximum_image_size: float | None = None
    target_downsample_size: float | None = None

    @classmethod
    def of(cls, train: TrainConfig, dataset: DatasetConfig) -> SizeRule:
        """A dataset's size settings at its effective resolution (its own, else config.json's)."""
        resolution = train.resolution_of(dataset)
        return cls(resolution.value, resolution.unit, dataset.minimum_image_size, dataset.maximum_image_size,
                   dataset.target_downsample_size)

    def check(self, dataset_id: str) -> None:
        """Reject settings that cannot work, naming the key to change."""
        if self.resolution_type not in RESOLUTION_TYPES:
            raise DataError(f"dataset {dataset_id!r}: resolution_type {self.resolution_type!r} is not "
                            f"one of {', '.join(RESOLUTION_TYPES)}")
        if not self.resolution or self.resolution <= 0:
            raise DataError(f"dataset {dataset_id!r}: resolution must be positive (got {self.resolution!r})")
        if self.resolution_type == "area" and self.resolution > 100:
            raise DataError(f"dataset {dataset_id!r}: resolution {self.resolution} with resolution_type "
                            f"'area' means {self.resolution} megapixels; give megapixels (e.g. 1.0) or "
                            f"use resolution_type 'pixel_area' for an edge length")
        if (self.target_downsample_size is not None and self.maximum_image_size is not None
                and self.target_downsample_size > self.maximum_image_size):
            raise DataError(f"dataset {dataset_id!r}: target_downsample_size {self.target_downsample_size} "
                            f"is larger than maximum_image_size {self.maximum_image_size}")

    def too_small(self, width: int, height: int) -> bool:
        """Whether the image is under minimum_image_size (and is skipped)."""
        return (self.minimum_image_size is not None
                and measure(width, height, self.resolution_type) < self.minimum_image_size)

    def downsampled(self, width: int, height: int) -> tuple[int, int]:
        """The size a big image is reduced to before resizing and cropping (unchanged when not big)."""
        if self.maximum_image_size is None:
            return width, height
        if measure(width, height, self.resolution_type) <= self.maximum_image_size:
            return width, height
        goal = self.target_downsample_size or self.maximum_image_size
        s = scale_to(width, height, goal, self.resolution_type)
        if s >= 1:
            return width, height
        return max(1, round(width * s)), max(1, round(height * s))
