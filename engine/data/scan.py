"""One dataset from folder to samples: discovery, sizes, captions, buckets and crops (no encoding)."""
from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.engine.data.buckets import parse_aspect_buckets
from tuner.engine.data.cache import file_content_hash, latent_key
from tuner.engine.data.captions import captions_for
from tuner.engine.data.crops import CROP_STYLES, image_rng
from tuner.engine.data.discovery import find_images
from tuner.engine.data.errors import DataError
from tuner.engine.data.pixels import BrokenImage, load_rgb
from tuner.engine.data.placement import Placement, place
from tuner.engine.data.sizing import SizeRule


@dataclass(frozen=True)
class DatasetSpec:
    """One image dataset's settings, merged with the global ones and with paths resolved."""

    id: str
    folder: Path
    cache_dir: Path
    size: SizeRule
    crop: bool = False
    crop_aspect: str = "square"
    crop_aspect_buckets: tuple = ()
    crop_style: str = "random"
    caption_strategy: str = "filename"
    instance_prompt: str | None = None
    repeats: int = 0
    probability: float = 1.0
    is_regularisation: bool = False
    content_hash: bool = False
    use_manifest_only: bool = False
    video: Any = None                  # a VideoSpec for video datasets (see video.py)

    def place(self, width: int, height: int, aspect_buckets: list[tuple[float, float]], alignment: int,
              rng: random.Random) -> Placement:
        """Where an image (or a clip's frames) of this size lands in this dataset."""
        return place(width, height, size=self.size, crop=self.crop, crop_aspect=self.crop_aspect,
                     aspect_buckets=aspect_buckets, crop_style=self.crop_style, alignment=alignment, rng=rng,
                     dataset_id=self.id)


@dataclass(frozen=True)
class Sample:
    """One training image with everything needed to produce (or find) its latent."""

    path: Path
    dataset_id: str
    captions: tuple[str, ...]
    is_regularisation: bool
    bucket: tuple[int, int]            # (width, height) in pixels
    downsampled: tuple[int, int]
    resized: tuple[int, int]
    box: tuple[int, int, int, int]
    key: str
    frames: int = 0                    # video clips: frames trained on (0: an image)
    is_i2v: bool = False               # video clips: the first frame is the conditioning image


@dataclass
class ScanResult:
    """What a scan found: usable samples, skips by reason, broken files and refreshed image sizes."""

    spec: DatasetSpec
    found: int = 0
    samples: list[Sample] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    broken: list[tuple[Path, str]] = field(default_factory=list)
    named_skips: dict[str, list[Path]] = field(default_factory=dict)   # reason → files, said once per reason
    manifest: dict[str, dict] = field(default_factory=dict)

    def skip(self, path: Path, reason: str, *, name_it: bool = False) -> None:
        """Leave a file out for `reason`; `name_it` lists it in the one warning for that reason."""
        self.skipped[reason] += 1
        if name_it:
            self.named_skips.setdefault(reason, []).append(path)


def _image_size(path: Path, rel: str, manifest: dict, content_hash: bool) -> tuple[dict, bool]:
    """The image's (upright) size and file identity, probed only when the file changed."""
    st = path.stat()
    digest = file_content_hash(path) if content_hash else None
    old = manifest.get(rel)
    if (old and old.get("mtime_ns") == st.st_mtime_ns and old.get("size") == st.st_size
            and old.get("sha256") == digest):
        return old, False
    image = load_rgb(path)  # raises BrokenImage
    width, height = image.size
    return {"mtime_ns": st.st_mtime_ns, "size": st.st_size, "sha256": digest,
            "width": width, "height": height}, True


def scan_dataset(spec: DatasetSpec, manifest: dict[str, dict], alignment: int, fingerprint: str,
                 seed: int | None) -> ScanResult:
    """Turn a dataset folder into samples; nothing is written (the caller saves `manifest`)."""
    if spec.video is not None:
        from tuner.engine.data.video_scan import scan_videos

        return scan_videos(spec, manifest, alignment, fingerprint, seed)
    spec.size.check(spec.id)
    if spec.crop_style not in CROP_STYLES:
        raise DataError(f"dataset {spec.id!r}: crop_style {spec.crop_style!r} is not one of "
                        f"{', '.join(CROP_STYLES)}")
    aspect_buckets = parse_aspect_buckets(spec.crop_aspect_buckets, spec.id)
    if spec.use_manifest_only and manifest:
        paths = sorted(spec.folder / rel for rel in manifest)
    elif not spec.folder.is_dir():
        raise DataError(f"dataset {spec.id!r}: instance_data_dir {spec.folder} does not exist or is "
                        f"not a folder")
    else:
        paths = find_images(spec.folder)
    result = ScanResult(spec=spec, found=len(paths))
    if not paths:
        raise DataError(f"dataset {spec.id!r}: no images (.png, .jpg, .jpeg, .webp) found in "
                        f"{spec.folder}; check instance_data_dir")
    for path in paths:
        rel = os.path.relpath(path, spec.folder)
        try:
            info, _ = _image_size(path, rel, manifest, spec.content_hash)
        except FileNotFoundError:
            result.skipped["file vanished during the scan"] += 1
            continue
        except BrokenImage as e:
            result.broken.append((path, str(e.__cause__ or e)))
            result.skipped["broken image"] += 1
            continue
        result.manifest[rel] = info
        width, height = info["width"], info["height"]
        if spec.size.too_small(width, height):
            result.skip(path, f"smaller than minimum_image_size {spec.size.minimum_image_size:g}", name_it=True)
            continue
        captions = captions_for(path, spec.caption_strategy, spec.instance_prompt, spec.id)
        if not captions:
            result.skipped["no caption text file (.txt beside the image) or it is empty"] += 1
            continue
        rng = image_rng(seed, f"{spec.id}/{rel}")
        at = spec.place(width, height, aspect_buckets, alignment, rng)
        key = latent_key(path.resolve(), info["mtime_ns"], info["size"], info.get("sha256"),
                         at.downsampled, at.resized, at.box, fingerprint)
        result.samples.append(Sample(path=path, dataset_id=spec.id, captions=tuple(captions),
                                     is_regularisation=spec.is_regularisation, bucket=at.bucket,
                                     downsampled=at.downsampled, resized=at.resized, box=at.box, key=key))
    return result
