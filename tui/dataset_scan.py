"""A light dataset scan for the wizard: counts, sizes, aspect buckets and what would stop training.

The engine's scan lives in tuner.engine.data, whose package __init__ imports torch, so none of
its modules can be imported here. This mirrors the few rules the wizard needs (discovery,
captions, size units, aspect buckets, the batch-size checks of prepare.py) and reads only image
headers with PIL.
"""
from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp"})
# Image sides are multiples of VAE factor × patch size (the family modules compute the same numbers).
ALIGNMENT = {"sana": 32, "sanavideo": 32, "sd3": 16}
MEGAPIXEL = 1_000_000


@dataclass
class ScanReport:
    """What the wizard shows about one dataset folder."""

    folder: str
    found: int = 0
    usable: int = 0
    sizes: Counter = field(default_factory=Counter)        # (w, h) of the source images
    buckets: Counter = field(default_factory=Counter)      # (w, h) training sizes
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    no_caption: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)        # training would fail
    warnings: list[str] = field(default_factory=list)
    suggested_repeats: int | None = None


def find_images(folder: Path) -> list[Path]:
    """Every image under `folder`, recursive, hidden files and folders skipped (as the engine does)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in files
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def has_caption(path: Path, strategy: str, instance_prompt: str | None) -> bool:
    """Whether the engine would find a caption for this image."""
    if strategy == "textfile":
        txt = path.with_suffix(".txt")
        return txt.is_file() and bool(txt.read_text(encoding="utf-8", errors="replace").strip())
    if strategy == "instanceprompt":
        return bool(instance_prompt)
    return bool(re.sub(r"[_\-\s\d]+", "", path.stem))


def measure(width: int, height: int, unit: str) -> float:
    """An image's size in a resolution unit: shorter edge, megapixels, or area as an edge."""
    if unit == "area":
        return width * height / MEGAPIXEL
    if unit == "pixel_area":
        return math.sqrt(width * height)
    return float(min(width, height))


def bucket_for(width: int, height: int, dataset: dict[str, Any], resolution: float, unit: str,
               alignment: int) -> tuple[int, int]:
    """The training size an image lands in (square crops, else its own aspect)."""
    crop_aspect = dataset.get("crop_aspect", "square")
    aspect = 1.0 if dataset.get("crop") and crop_aspect == "square" else width / height
    if dataset.get("crop") and crop_aspect == "closest" and dataset.get("crop_aspect_buckets"):
        choices = [float(b["aspect_bucket"] if isinstance(b, dict) else b) for b in dataset["crop_aspect_buckets"]]
        aspect = min(choices, key=lambda a: abs(math.log(a / aspect)))
    if unit == "pixel":
        w, h = (resolution * aspect, resolution) if aspect >= 1 else (resolution, resolution / aspect)
    else:
        area = resolution * MEGAPIXEL if unit == "area" else resolution ** 2
        w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    return (max(alignment, round(w / alignment) * alignment), max(alignment, round(h / alignment) * alignment))


def scan_folder(dataset: dict[str, Any], config: dict[str, Any], processes: int = 1) -> ScanReport:
    """Scan one dataset entry as the engine would, without decoding pixels."""
    folder = Path(str(dataset.get("instance_data_dir") or "")).expanduser()
    report = ScanReport(folder=str(folder))
    if not str(dataset.get("instance_data_dir") or "").strip():
        report.errors.append("choose the folder that holds the images")
        return report
    if not folder.is_dir():
        report.errors.append(f"{folder} is not a folder")
        return report
    resolution = float(dataset.get("resolution") or config.get("resolution") or 1024)
    unit = dataset.get("resolution_type") or config.get("resolution_type") or "pixel_area"
    minimum = dataset.get("minimum_image_size")
    strategy = dataset.get("caption_strategy", "filename")
    alignment = ALIGNMENT.get(config.get("model_family", "sana"), 32)
    paths = find_images(folder)
    report.found = len(paths)
    for path in paths:
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (OSError, UnidentifiedImageError) as e:
            report.unreadable.append((path.name, str(e)))
            continue
        report.sizes[(width, height)] += 1
        if minimum and measure(width, height, unit) < float(minimum):
            continue
        if not has_caption(path, strategy, dataset.get("instance_prompt")):
            report.no_caption.append(path.name)
            continue
        report.usable += 1
        report.buckets[bucket_for(width, height, dataset, resolution, unit, alignment)] += 1
    _judge(report, dataset, config, processes)
    return report


def _judge(report: ScanReport, dataset: dict[str, Any], config: dict[str, Any], processes: int) -> None:
    """The engine's size checks (engine/data/prepare.py), said before the run instead of during it."""
    repeats = int(dataset.get("repeats") or 0)
    batch = int(config.get("train_batch_size") or 1) * max(processes, 1)
    needed = batch * int(config.get("gradient_accumulation_steps") or 1)
    if report.unreadable:
        names = ", ".join(name for name, _ in report.unreadable[:5])
        report.warnings.append(f"{len(report.unreadable)} unreadable file(s) will be skipped: {names}")
    if report.no_caption:
        names = ", ".join(report.no_caption[:5])
        report.warnings.append(f"{len(report.no_caption)} image(s) have no caption and are skipped: {names}")
    if report.found == 0:
        report.errors.append("no images (.png, .jpg, .jpeg, .webp) in this folder")
    elif report.usable == 0:
        report.errors.append("no usable image: check the caption strategy and the minimum size")
    elif report.usable * (repeats + 1) < needed:
        report.suggested_repeats = math.ceil(needed / report.usable) - 1
        report.errors.append(f"{report.usable} images × (repeats {repeats} + 1) is fewer than the {needed} samples "
                             f"one optimizer step needs: set repeats to {report.suggested_repeats}, "
                             "add images or lower the batch")
    elif max(report.buckets.values()) * (repeats + 1) < batch:
        report.suggested_repeats = math.ceil(batch / max(report.buckets.values())) - 1
        report.errors.append(f"no aspect bucket fills a batch of {batch}: crop to square, "
                             f"or set repeats to {report.suggested_repeats}")
