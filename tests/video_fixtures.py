"""Helpers for the video tests: short clips of moving shapes written with PyAV, and config folders
that train the tiny Sana Video on them."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from tuner.engine.data.video import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 40)}
SHAPES = ("circle", "square")


def moving_shape(shape: str, colour: str, frames: int, size: tuple[int, int], speed: int = 4) -> list[Image.Image]:
    """A shape sliding left to right over a white background, one PIL image per frame."""
    width, height = size
    out = []
    for i in range(frames):
        img = Image.new("RGB", size, (245, 245, 245))
        draw = ImageDraw.Draw(img)
        r = min(width, height) // 5
        cx, cy = r + 2 + i * speed, height // 2
        box = [cx - r, cy - r, cx + r, cy + r]
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        out.append(img)
    return out


def make_clips(folder: Path, count: int = 4, frames: int = 9, size: tuple[int, int] = (64, 64),
               fps: int = 8, ext: str = ".mp4") -> Path:
    """`count` clips with a caption file each (textfile captions)."""
    folder.mkdir(parents=True, exist_ok=True)
    combos = [(s, c) for c in COLOURS for s in SHAPES]
    for i in range(count):
        shape, colour = combos[i % len(combos)]
        name = f"{i:02d}-{colour}-{shape}"
        clip = moving_shape(shape, colour, frames, size)
        if ext == ".gif":
            clip[0].save(folder / f"{name}.gif", save_all=True, append_images=clip[1:], duration=1000 // fps, loop=0)
        else:
            write_video(folder / f"{name}{ext}", clip, fps)
        (folder / f"{name}.txt").write_text(f"a {colour} {shape} on a white background\n")
    return folder


def video_config(tmp: Path, model: Path, *, clips: int = 4, frames: int = 9, video: dict | None = None,
                 dataset: dict | None = None, **overrides) -> Path:
    """A config folder training the tiny Sana Video on generated clips; returns the config folder."""
    tmp = Path(tmp).resolve()
    data = make_clips(tmp / "clips", count=clips, frames=frames)
    config_dir = tmp / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    config = dict(
        model_family="sanavideo", model_type="full", pretrained_model_name_or_path=str(model),
        output_dir=str(tmp / "output"), data_backend_config=str(config_dir / "multidatabackend.json"),
        user_prompt_library=str(config_dir / "user_prompt_library.json"),
        mixed_precision="no", optimizer="adamw", learning_rate=1e-3, lr_scheduler="constant",
        train_batch_size=2, max_train_steps=10, checkpoint_step_interval=0, validation_step_interval=0,
        validation_disable=True, validation_prompt="a red circle on a white background",
        validation_num_inference_steps=2, use_ema=False, caption_dropout_probability=0.0, seed=42,
        resolution=64, resolution_type="pixel", max_grad_norm=0.0,
    )
    config.update(overrides)
    datasets = [
        {"id": "clips", "type": "local", "dataset_type": "video", "instance_data_dir": str(data),
         "cache_dir_vae": str(tmp / "cache" / "vae" / "clips"), "caption_strategy": "textfile",
         "crop": True, "crop_aspect": "square", "crop_style": "center",
         "video": {"num_frames": 5, **(video or {})}, **(dataset or {})},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(tmp / "cache" / "text")},
    ]
    (config_dir / "config.json").write_text(json.dumps(config, indent=2))
    (config_dir / "multidatabackend.json").write_text(json.dumps(datasets, indent=2))
    (config_dir / "user_prompt_library.json").write_text(json.dumps({}))
    return config_dir
