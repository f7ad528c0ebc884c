"""One video dataset from folder to samples: probe each clip, choose its frames, size and crop.

A clip is sized like an image (aspect bucket at the dataset resolution, resize to cover, crop),
and its bucket also carries its frame count, because one batch must stack to (B, 3, F, H, W).
So both bucket strategies keep clips of other lengths apart; `resolution_frames` differs in
naming its buckets by size and length (832x480@81) in logs and cache metadata.
A clip shorter than min_frames (default num_frames) is skipped and named in one warning, as
SimpleTuner does; one that cannot be decoded stops the run with a DataError naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from tuner.engine.data.buckets import parse_aspect_buckets
from tuner.engine.data.cache import file_content_hash, latent_key
from tuner.engine.data.captions import captions_for
from tuner.engine.data.crops import CROP_STYLES, image_rng
from tuner.engine.data.errors import DataError
from tuner.engine.data.scan import DatasetSpec, Sample, ScanResult
from tuner.engine.data.video import BUCKET_STRATEGIES, BrokenVideo, VIDEO_EXTENSIONS, find_videos, probe_video


def _clip_info(path: Path, rel: str, manifest: dict, content_hash: bool) -> dict:
    """The clip's size, length and file identity, probed only when the file changed."""
    st = path.stat()
    digest = file_content_hash(path) if content_hash else None
    old = manifest.get(rel)
    if (old and old.get("mtime_ns") == st.st_mtime_ns and old.get("size") == st.st_size
            and old.get("sha256") == digest and "frames" in old):
        return old
    return {"mtime_ns": st.st_mtime_ns, "size": st.st_size, "sha256": digest, **probe_video(path)}


def _check(spec: DatasetSpec) -> None:
    video = spec.video
    spec.size.check(spec.id)
    if spec.crop_style not in CROP_STYLES:
        raise DataError(f"dataset {spec.id!r}: crop_style {spec.crop_style!r} is not one of {', '.join(CROP_STYLES)}")
    if video.bucket_strategy not in BUCKET_STRATEGIES:
        raise DataError(f"dataset {spec.id!r}: video.bucket_strategy {video.bucket_strategy!r} is not one of "
                        f"{', '.join(BUCKET_STRATEGIES)}")


def scan_videos(spec: DatasetSpec, manifest: dict[str, dict], alignment: int, fingerprint: str,
                seed: int | None) -> ScanResult:
    """Turn a video dataset folder into clip samples; nothing is written (the caller saves `manifest`)."""
    _check(spec)
    video = spec.video
    aspect_buckets = parse_aspect_buckets(spec.crop_aspect_buckets, spec.id)
    if spec.use_manifest_only and manifest:
        paths = sorted(spec.folder / rel for rel in manifest)
    elif not spec.folder.is_dir():
        raise DataError(f"dataset {spec.id!r}: instance_data_dir {spec.folder} does not exist or is not a folder")
    else:
        paths = find_videos(spec.folder)
    if not paths:
        raise DataError(f"dataset {spec.id!r}: no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) found in "
                        f"{spec.folder}; check instance_data_dir")
    result = ScanResult(spec=spec, found=len(paths))
    for path in paths:
        rel = os.path.relpath(path, spec.folder)
        try:
            info = _clip_info(path, rel, manifest, spec.content_hash)
        except FileNotFoundError:
            result.skipped["file vanished during the scan"] += 1
            continue
        except BrokenVideo as e:
            raise DataError(f"dataset {spec.id!r}: video {path} is unreadable ({e.__cause__ or e}); "
                            f"re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it") from e
        result.manifest[rel] = info
        length = info["frames"]
        if length < video.shortest:  # as SimpleTuner does: skipped, and named in one warning
            key = "min_frames" if video.min_frames else "num_frames"
            result.skip(path, f"shorter than video.{key} {video.shortest} frames", name_it=True)
            continue
        if video.max_frames and length > video.max_frames:
            result.skipped[f"longer than video.max_frames {video.max_frames}"] += 1
            continue
        width, height = info["width"], info["height"]
        if spec.size.too_small(width, height):
            result.skip(path, f"smaller than minimum_image_size {spec.size.minimum_image_size:g}", name_it=True)
            continue
        captions = captions_for(path, spec.caption_strategy, spec.instance_prompt, spec.id)
        if not captions:
            result.skipped["no caption text file (.txt beside the video) or it is empty"] += 1
            continue
        frames = video.frames_for(length)
        rng = image_rng(seed, f"{spec.id}/{rel}")
        at = spec.place(width, height, aspect_buckets, alignment, rng)
        # The frame count enters the key through the fingerprint slot: same clip, other length, other latent.
        key = latent_key(path.resolve(), info["mtime_ns"], info["size"], info.get("sha256"), at.downsampled,
                         at.resized, at.box, f"{fingerprint}|frames=0:{frames}")
        result.samples.append(Sample(path=path, dataset_id=spec.id, captions=tuple(captions),
                                     is_regularisation=spec.is_regularisation, bucket=(*at.bucket, frames),
                                     downsampled=at.downsampled, resized=at.resized, box=at.box, key=key,
                                     frames=frames, is_i2v=video.is_i2v))
    return result
