"""Opening images (RGB, EXIF-transposed) and turning one into a bucket-sized tensor in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps


class BrokenImage(Exception):
    """The file cannot be decoded as an image (not an image, truncated, corrupt)."""


def load_rgb(path: Path) -> Image.Image:
    """The whole decoded image, upright per its EXIF orientation, in RGB."""
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: a truncated file fails here, not halfway through training
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BrokenImage(f"{path}: {e}") from e


def transform(image: Image.Image, downsampled: tuple[int, int], resized: tuple[int, int],
              box: tuple[int, int, int, int]) -> torch.Tensor:
    """Downsample (when big), resize to cover the bucket, crop: a (3, H, W) float tensor in [-1, 1]."""
    if image.size != downsampled:
        image = image.resize(downsampled, Image.Resampling.LANCZOS)
    if image.size != resized:
        image = image.resize(resized, Image.Resampling.LANCZOS)
    image = image.crop(box)
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous().div_(127.5).sub_(1.0)
