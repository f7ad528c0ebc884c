"""Video datasets: decoding, frame counts the VAE accepts, clip buckets, clear errors naming the file,
and latent caching keyed like images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tuner.engine.config import load_bundle
from tuner.engine.data import DataError, prepare_data
from tuner.engine.data.scan import DatasetSpec, scan_dataset
from tuner.engine.data.sizing import SizeRule
from tuner.engine.data.video import (
    VideoSpec, bucket_name, clip_tensor, frame_strip, load_frames, probe_video, write_video,
)
from video_fixtures import make_clips, moving_shape, video_config


def spec(folder: Path, tmp: Path, **video) -> DatasetSpec:
    return DatasetSpec(id="clips", folder=folder, cache_dir=tmp / "cache", size=SizeRule(resolution=64),
                       caption_strategy="textfile", crop=True, crop_aspect="square", crop_style="center",
                       video=VideoSpec(**{"num_frames": 5, **video}))


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".mov", ".gif"])
def test_every_container_decodes_to_its_frames(tmp_path, ext):
    folder = make_clips(tmp_path / "clips", count=1, frames=7, size=(64, 48), ext=ext)
    path = next(p for p in folder.iterdir() if p.suffix == ext)
    info = probe_video(path)
    assert (info["width"], info["height"], info["frames"]) == (64, 48, 7)
    frames = load_frames(path, 7)
    assert len(frames) == 7 and frames[0].size == (64, 48)
    # The shape moves right: its red mass is further right in the last frame than in the first.
    def centre_x(frame):
        blue = 255 - np.asarray(frame, dtype=np.float32)[:, :, 2]  # the red shape lacks blue
        return float((blue.sum(0) * np.arange(64)).sum() / blue.sum())

    assert centre_x(frames[-1]) > centre_x(frames[0]) + 10


@pytest.mark.parametrize("length,num,interval,expected", [
    (81, 81, None, 81), (100, 81, None, 81), (80, 81, None, 77), (9, 81, None, 9), (7, 81, None, 5),
    (81, 81, 8, 81), (50, 81, 16, 49), (5, 5, 3, 1),
])
def test_frame_counts_are_what_the_vae_encodes(length, num, interval, expected):
    video = VideoSpec(num_frames=num, frame_interval=interval, temporal_compression=4)
    assert video.frames_for(length) == expected
    assert (expected - 1) % 4 == 0


def test_resolution_frames_buckets_are_named_by_size_and_length(tmp_path):
    folder = make_clips(tmp_path / "clips", count=2, frames=9)
    make_clips(tmp_path / "short", count=2, frames=6)
    for p in (tmp_path / "short").iterdir():
        p.rename(folder / f"short-{p.name}")
    result = scan_dataset(spec(folder, tmp_path, num_frames=9, min_frames=5, bucket_strategy="resolution_frames"),
                          {}, 16, "fp", 0)
    names = sorted({bucket_name(s.bucket, "resolution_frames") for s in result.samples})
    assert names == ["64x64@5", "64x64@9"]
    assert bucket_name((832, 480, 81), "resolution_frames") == "832x480@81"
    assert bucket_name((832, 480, 81), "aspect_ratio") == "832x480"


def test_too_short_video_is_skipped_and_named(tmp_path):
    # SimpleTuner skips a clip shorter than min_frames; so do we, naming it once.
    folder = make_clips(tmp_path / "clips", count=2, frames=9)
    short = folder / "short.mp4"
    write_video(short, moving_shape("circle", "red", 3, (64, 64)), 8)
    (folder / "short.txt").write_text("a red circle\n")
    result = scan_dataset(spec(folder, tmp_path), {}, 16, "fp", 0)
    assert len(result.samples) == 2 and short not in {s.path for s in result.samples}
    assert result.named_skips == {"shorter than video.num_frames 5 frames": [short]}


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_video_names_the_file(tmp_path, damage):
    folder = make_clips(tmp_path / "clips", count=2, frames=9)
    bad = folder / "00-red-circle.mp4"
    data = bad.read_bytes()
    bad.write_bytes(b"not a video at all" * 50 if damage == "garbage" else data[: len(data) // 3])
    with pytest.raises(DataError, match=r"00-red-circle\.mp4"):
        scan_dataset(spec(folder, tmp_path), {}, 16, "fp", 0)


def test_max_frames_skips_long_clips_and_captions_come_from_textfiles(tmp_path):
    folder = make_clips(tmp_path / "clips", count=3, frames=9)
    write_video(folder / "long.mp4", moving_shape("square", "blue", 13, (64, 64)), 8)
    (folder / "long.txt").write_text("a long clip\n")
    result = scan_dataset(spec(folder, tmp_path, max_frames=10), {}, 16, "fp", 0)
    assert len(result.samples) == 3 and sum(result.skipped.values()) == 1
    assert {s.captions[0] for s in result.samples} == {
        "a red circle on a white background", "a red square on a white background",
        "a green circle on a white background"}
    assert all(s.frames == 5 and s.bucket == (64, 64, 5) for s in result.samples)


def test_clip_tensor_is_cropped_and_in_range(tmp_path):
    folder = make_clips(tmp_path / "clips", count=1, frames=9, size=(64, 48))
    result = scan_dataset(spec(folder, tmp_path), {}, 16, "fp", 0)
    s = result.samples[0]
    pixels = clip_tensor(s.path, s.frames, s.downsampled, s.resized, s.box)
    assert pixels.shape == (3, 5, 64, 64)
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_frame_strip_holds_first_and_last(tmp_path):
    frames = moving_shape("circle", "red", 9, (32, 32))
    strip = frame_strip(frames, 4)
    assert strip.size == (128, 32)
    assert strip.crop((0, 0, 32, 32)).tobytes() == frames[0].tobytes()
    assert strip.crop((96, 0, 128, 32)).tobytes() == frames[-1].tobytes()


def test_latents_are_cached_and_reused_and_a_changed_clip_is_reencoded(tmp_path, tiny_sanavideo):
    from tuner.engine.models.sanavideo import SanaVideoFamily

    config = video_config(tmp_path, tiny_sanavideo, clips=4, frames=9, video={"is_i2v": True})
    bundle = load_bundle(config)
    family = SanaVideoFamily(bundle.train, torch.device("cpu"), torch.float32)
    first = prepare_data(bundle, family)
    assert (first.encoded_latents, first.reused_latents) == (4, 0)
    batch = first.next_batch()
    assert batch.latents.shape == (2, 16, 2, 8, 8)
    assert batch.first_frame is not None and torch.equal(batch.first_frame, batch.latents[:, :, :1])
    again = prepare_data(load_bundle(config), family)
    assert (again.encoded_latents, again.reused_latents) == (0, 4)
    clip = tmp_path / "clips" / "00-red-circle.mp4"
    write_video(clip, moving_shape("circle", "red", 9, (64, 64), speed=2), 8)
    changed = prepare_data(load_bundle(config), family)
    assert (changed.encoded_latents, changed.reused_latents) == (1, 3)
    manifest = json.loads((tmp_path / "cache" / "vae" / "clips" / "images.json").read_text())
    assert manifest["images"]["00-red-circle.mp4"]["frames"] == 9
