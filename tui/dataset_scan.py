"""A light dataset scan for the wizard: counts, sizes, aspect buckets and what would stop training.

It applies the engine's own torch-free rules (discovery, captions, size units, aspect buckets)
and the batch-size checks of engine/data/prepare.py, reading only image headers with PIL.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from tuner.engine.config import DatasetConfig, Issue, TrainConfig, parse_datasets, parse_train_config
from tuner.engine.data.buckets import parse_aspect_buckets
from tuner.engine.data.captions import captions_for
from tuner.engine.data.discovery import find_images
from tuner.engine.data.errors import DataError
from tuner.engine.data.placement import place
from tuner.engine.data.sizing import SizeRule
from tuner.engine.jobdir import DATABACKEND
from tuner.tui.folders import folder_to_read

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
    folder_problem: str = ""                               # the folder itself is missing or unreadable
    warnings: list[str] = field(default_factory=list)
    suggested_repeats: int | None = None
    dropped: int = 0                                       # samples per epoch no full batch takes
    left_out: str = ""                                     # the warning that says so (also in warnings)


def has_caption(path: Path, strategy: str, instance_prompt: str | None) -> bool:
    """Whether the engine would find a caption for this image."""
    try:
        return bool(captions_for(path, strategy, instance_prompt, dataset_id=path.parent.name))
    except DataError:
        return False


def bucket_for(width: int, height: int, dataset: DatasetConfig, size: SizeRule, alignment: int) -> tuple[int, int]:
    """The training size an image lands in, by the engine's placement (a random aspect shows as the image's own)."""
    buckets = parse_aspect_buckets(dataset.crop_aspect_buckets, dataset.id)
    crop_aspect = dataset.crop_aspect
    if crop_aspect == "random" or (crop_aspect == "closest" and not buckets):
        crop_aspect = "preserve"
    return place(width, height, size=size, crop=dataset.crop, crop_aspect=crop_aspect, aspect_buckets=buckets,
                 crop_style=dataset.crop_style, alignment=alignment, rng=random.Random(0),
                 dataset_id=dataset.id).bucket


# The config keys the scan judges by (the rest of config.json is the review's to check).
_SCAN_KEYS = ("model_family", "resolution", "resolution_type", "train_batch_size", "gradient_accumulation_steps")


def typed_settings(dataset: dict[str, Any], config: dict[str, Any]) -> tuple[DatasetConfig | None, TrainConfig | None,
                                                                            list[str]]:
    """The wizard's entries as the engine's typed settings, or what is wrong with them (a field's own words)."""
    entry = {"id": "dataset", **{k: v for k, v in dataset.items() if v is not None and v != ""}}
    settings = {k: config[k] for k in _SCAN_KEYS if config.get(k) not in (None, "")}
    datasets, found = parse_datasets([entry])
    train, more = parse_train_config(settings)
    problems = [f"{i.key.split('.', 1)[-1]}: {i.message}" for i in found + more if i.level == "error"]
    return (datasets[0] if datasets else None), train, problems


def scan_folder(dataset: dict[str, Any], config: dict[str, Any], processes: int = 1) -> ScanReport:
    """Scan one dataset entry as the engine would, without decoding pixels."""
    text = str(dataset.get("instance_data_dir") or "")
    folder = Path(text).expanduser()
    report = ScanReport(folder=str(folder))
    report.folder_problem = ("choose the folder that holds the images" if not text.strip() else
                             folder_to_read(text) or "")
    if report.folder_problem:
        report.errors.append(report.folder_problem)
        return report
    ds, train, problems = typed_settings(dataset, config)
    if ds is None or train is None:
        report.errors += problems
        return report
    try:
        _count(report, folder, ds, train)
    except DataError as e:  # settings only the engine's rules reject (a zero aspect bucket)
        report.errors.append(str(e))
        return report
    except OverflowError:   # a resolution so large no image size can be computed from it
        report.errors.append(f"resolution {ds.resolution or train.resolution:g} is too large to size an image "
                             "at; give pixels (e.g. 1024) or, with resolution_type area, megapixels (e.g. 1.0)")
        return report
    _judge(report, ds, train, processes)
    return report


def _count(report: ScanReport, folder: Path, ds: DatasetConfig, train: TrainConfig) -> None:
    """Read each image's header and sort it: unreadable, too small, uncaptioned, or into its bucket."""
    size = SizeRule.of(train, ds)
    alignment = train.family.pixel_alignment
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
        if size.too_small(width, height):
            continue
        if not has_caption(path, ds.caption_strategy, ds.instance_prompt):
            report.no_caption.append(path.name)
            continue
        report.usable += 1
        report.buckets[bucket_for(width, height, ds, size, alignment)] += 1


def _judge(report: ScanReport, dataset: DatasetConfig, train: TrainConfig, processes: int) -> None:
    """The engine's size checks (engine/data/prepare.py), said before the run instead of during it."""
    repeats = dataset.repeats
    batch = train.train_batch_size * max(processes, 1)
    needed = batch * train.gradient_accumulation_steps
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
    elif dataset.crop_aspect != "random":   # a random aspect's buckets are drawn anew each epoch
        _say_dropped(report, repeats, batch)


def _say_dropped(report: ScanReport, repeats: int, batch: int) -> None:
    """The engine cuts each bucket into whole batches and leaves the rest out of the epoch (engine/data/sampler.py)."""
    left = {size: n * (repeats + 1) % batch for size, n in report.buckets.items()}
    report.dropped = sum(left.values())
    if report.dropped:
        where = ", ".join(f"{w}×{h}: {n}" for (w, h), n in sorted(left.items()) if n)
        square = ", crop to square (one bucket)" if len(report.buckets) > 1 else ""
        report.left_out = (
            f"{report.dropped} of {report.usable * (repeats + 1)} samples per epoch are left out, since buckets fill "
            f"only whole batches of {batch} ({where} left over): add or remove images{square}, change repeats, or "
            "pick a batch size the buckets divide into")
        report.warnings.append(report.left_out)


def scan_issues(datasets: list[dict[str, Any]], config: dict[str, Any], processes: int,
                checked: list[Issue]) -> list[Issue]:
    """The scan's findings on every dataset as the config check's Issues (for the wizard's review).

    A dataset the check already faults (a missing folder, a bad value) is left to that finding.
    The batch findings are the repeats field's, the rest the folder's.
    """
    found = []
    for index, dataset in enumerate(datasets):
        owner = str(dataset.get("id") or f"#{index + 1}")
        if any(i.file == DATABACKEND and i.key.split(".")[0] == owner and i.level == "error" for i in checked):
            continue
        report = scan_folder(dataset, config, processes)
        if report.folder_problem:
            continue
        for level, messages in (("error", report.errors), ("warning", report.warnings)):
            for message in messages:
                batchwise = (level == "error" and report.suggested_repeats is not None) or message == report.left_out
                found.append(Issue(level, DATABACKEND, f"{owner}.{'repeats' if batchwise else 'instance_data_dir'}",
                                   message))
    return found
