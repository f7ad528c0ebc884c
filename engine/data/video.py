"""Video files through PyAV: finding them, probing length and size, choosing the frames a clip
trains on, decoding those frames to a (3, F, H, W) tensor, and writing frames back as an mp4.

Frame rule: a clip trains on its first `frames` frames, where `frames` is min(clip length,
num_frames) rounded down so that frames - 1 is a multiple of lcm(frame_interval, the VAE's
temporal compression) — Wan's VAE encodes 4k+1 frames. Frames are taken at the file's own rate.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tuner.engine.data.errors import DataError
from tuner.engine.data.pixels import BrokenImage, load_rgb, transform

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".gif"})
BUCKET_STRATEGIES = ("aspect_ratio", "resolution_frames")


class BrokenVideo(BrokenImage):
    """The file cannot be decoded as a video (not a video, truncated, no video stream)."""


@dataclass(frozen=True)
class VideoSpec:
    """A video dataset's clip settings (the `video` block), merged with the family's temporal factor."""

    num_frames: int = 81
    min_frames: int | None = None
    max_frames: int | None = None
    is_i2v: bool = False
    bucket_strategy: str = "aspect_ratio"
    frame_interval: int | None = None
    temporal_compression: int = 4

    @property
    def step(self) -> int:
        """Frame counts are k × step + 1."""
        return math.lcm(max(1, self.frame_interval or 1), max(1, self.temporal_compression))

    @property
    def shortest(self) -> int:
        """Clips with fewer frames than this are refused."""
        return self.min_frames or self.num_frames

    def frames_for(self, length: int) -> int:
        """The number of frames a clip of `length` frames trains on."""
        usable = min(length, self.num_frames)
        return max(1, (usable - 1) // self.step * self.step + 1)


def _av():
    try:
        import av
    except ImportError as e:  # the engine's other paths do not need PyAV
        raise DataError("video datasets need PyAV: pip install av") from e
    return av


def find_videos(folder: Path) -> list[Path]:
    """Every video under `folder` (recursive, sorted, hidden files and folders skipped)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in files
                  if not n.startswith(".") and os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS]
    return sorted(found)


def _open(path: Path):
    av = _av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise BrokenVideo(f"{path}: cannot be opened as a video ({e})") from e
    if not container.streams.video:
        container.close()
        raise BrokenVideo(f"{path}: has no video stream")
    return container


def probe_video(path: Path) -> dict:
    """{width, height, frames, fps} of a video's first video stream."""
    av = _av()
    with _open(path) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        frames = int(stream.frames or 0)
        try:
            if frames <= 0:  # webm and gif carry no frame count: count by decoding
                frames = sum(1 for _ in container.decode(stream))
        except (av.FFmpegError, ValueError) as e:
            raise BrokenVideo(f"{path}: decoding failed ({e})") from e
    if width <= 0 or height <= 0 or frames <= 0:
        raise BrokenVideo(f"{path}: no decodable frames ({width}x{height}, {frames} frames)")
    return {"width": width, "height": height, "frames": frames, "fps": fps}


def load_frames(path: Path, count: int) -> list:
    """The first `count` frames of a video as RGB PIL images; BrokenVideo when it has fewer."""
    av = _av()
    frames = []
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_image().convert("RGB"))
                if len(frames) == count:
                    break
        except (av.FFmpegError, ValueError) as e:
            raise BrokenVideo(f"{path}: decoding failed after {len(frames)} frames ({e})") from e
    if len(frames) < count:
        raise BrokenVideo(f"{path}: only {len(frames)} frames could be decoded, {count} needed "
                          f"(the file changed or is truncated)")
    return frames


def clip_tensor(path: Path, frames: int, downsampled: tuple[int, int], resized: tuple[int, int],
                box: tuple[int, int, int, int]) -> torch.Tensor:
    """A clip's training pixels: (3, F, H, W) in [-1, 1], every frame sized and cropped alike."""
    images = load_frames(path, frames)
    return torch.stack([transform(im, downsampled, resized, box) for im in images], dim=1)


def sample_pixels(sample) -> torch.Tensor:
    """A scanned sample's pixels: (3, H, W) for an image, (3, F, H, W) for a video clip."""
    if getattr(sample, "frames", 0):
        return clip_tensor(sample.path, sample.frames, sample.downsampled, sample.resized, sample.box)
    return transform(load_rgb(sample.path), sample.downsampled, sample.resized, sample.box)


def bucket_name(bucket: tuple[int, ...], strategy: str = "resolution_frames") -> str:
    """'832x480@81' for resolution_frames (and any clip bucket), '832x480' for an aspect bucket."""
    if len(bucket) > 2 and strategy == "resolution_frames":
        return f"{bucket[0]}x{bucket[1]}@{bucket[2]}"
    return f"{bucket[0]}x{bucket[1]}"


def write_video(path: Path, frames: list, fps: int) -> Path:
    """Write PIL frames as H.264 in mp4/mov/mkv, or VP9 in webm (yuv420p: sides trimmed to even numbers)."""
    av = _av()
    width, height = frames[0].size
    width, height = width - width % 2, height - height % 2
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    fmt = {".webm": "webm", ".mov": "mov", ".mkv": "matroska"}.get(path.suffix.lower(), "mp4")
    codec = "libvpx-vp9" if fmt == "webm" else "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(tmp), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in frames:
            image = image.convert("RGB").crop((0, 0, width, height))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path


def frame_strip(frames: list, count: int = 4):
    """A still of `count` evenly spaced frames side by side (first and last included)."""
    from PIL import Image

    count = max(1, min(count, len(frames)))
    picks = [frames[round(i * (len(frames) - 1) / max(1, count - 1))] for i in range(count)]
    width, height = picks[0].size
    strip = Image.new("RGB", (width * count, height))
    for i, frame in enumerate(picks):
        strip.paste(frame.convert("RGB"), (i * width, 0))
    return strip
