"""The built-in demo: a tiny Sana trained on generated coloured shapes, watched live.

`tuner demo` (the README's `make demo`) writes a complete config folder — model, dataset,
config.json, multidatabackend.json, prompt library — and trains it through tunerd when the
daemon is available, else in this process.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 40)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")
DEMO_PROMPTS = {
    "red_circle": "a red circle on a white background",
    "blue_square": "a blue square on a black background",
    "yellow_triangle": "a yellow triangle on a white background",
}


def draw_shape(shape: str, colour: str, background: str, size: int, rng: random.Random) -> Image.Image:
    """One dataset image: a filled shape of some size and position on a plain background."""
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.34) * size
    cx, cy = rng.uniform(0.4, 0.6) * size, rng.uniform(0.4, 0.6) * size
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    return img


def make_dataset(folder: Path, count: int = 24, size: int = 128, seed: int = 0) -> Path:
    """Coloured shapes with a caption file each; regenerated only when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) >= count:
        return folder
    rng = random.Random(seed)
    combos = [(s, c, b) for s in SHAPES for c in COLOURS for b in BACKGROUNDS]
    rng.shuffle(combos)
    for i in range(count):
        shape, colour, background = combos[i % len(combos)]
        name = f"{i:03d}-{colour}-{shape}"
        draw_shape(shape, colour, background, size, rng).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"a {colour} {shape} on a {background} background\n")
    return folder


def write_demo_config(folder: Path, steps: int | None = None, *, model_dir: Path | None = None,
                      images: int = 24, output_dir: Path | None = None, **overrides: Any) -> Path:
    """A complete config folder for the demo under `folder` (model, dataset, configs); returns the config folder.

    `model_dir` reuses an already built tiny model; `output_dir` defaults to `folder/output`;
    `overrides` replace config.json keys. The model, dataset and caches are shared between runs.
    """
    from tuner.engine.tiny import build_tiny_sana
    from tuner.presets import apply_preset, load_preset

    folder = Path(folder).resolve()
    model = Path(model_dir) if model_dir is not None else build_tiny_sana(folder / "model", size="demo")
    dataset = make_dataset(folder / "dataset", count=images)
    config_dir = folder / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "pretrained_model_name_or_path": str(model),
        "output_dir": str(Path(output_dir).resolve() if output_dir else folder / "output"),
        "data_backend_config": str(config_dir / "multidatabackend.json"),
        "user_prompt_library": str(config_dir / "user_prompt_library.json"),
        "validation_prompt": DEMO_PROMPTS["red_circle"],
    }
    datasets = [
        {"id": "shapes", "type": "local", "dataset_type": "image", "instance_data_dir": str(dataset),
         "cache_dir_vae": str(folder / "cache" / "vae" / "shapes")},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(folder / "cache" / "text")},
    ]
    config, datasets = apply_preset(load_preset("sana-tiny-demo"), base, datasets)
    if steps is not None:
        config["max_train_steps"] = steps
    config.update(overrides)
    library = {k: v for k, v in DEMO_PROMPTS.items() if v != config["validation_prompt"]}
    (config_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (config_dir / "multidatabackend.json").write_text(json.dumps(datasets, indent=2) + "\n")
    (config_dir / "user_prompt_library.json").write_text(json.dumps(library, indent=2) + "\n")
    return config_dir


def new_run_dir(folder: Path) -> Path:
    """A fresh output folder for one demo run (earlier runs' results stay where they are)."""
    return Path(folder).resolve() / "runs" / time.strftime("%Y%m%d-%H%M%S")


def command(args: Any) -> int:
    """`tuner demo`: write the demo config, then train it in this process and watch."""
    from tuner.engine.runner import run, watch

    output = new_run_dir(Path(args.dir))
    config_dir = write_demo_config(Path(args.dir), steps=args.steps, output_dir=output)
    print(f"demo config: {config_dir}  (edit it and run `tuner train {config_dir}`)")
    code = watch(lambda listener: run(config_dir, output, listener), plain=args.plain, title="tuner demo: tiny Sana")
    print(f"validation images: {output / 'validation_images'}\npipeline: {output / 'pipeline'}")
    return code
