"""The built-in demo as a config folder: the sana-tiny-demo preset laid over the engine's demo parts.

This is where the preset and the engine's demo (a generated dataset, a tiny Sana) meet, on the
presets side, because presets may import the engine and never the other way round. `tunerd demo`
submits the folder to the daemon; `tuner demo` trains it in this process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuner.engine.demo import DEMO_PROMPTS, demo_model, make_dataset, new_run_dir

from .loader import load_preset
from .overlay import apply_preset

DEMO_PRESET = "sana-tiny-demo"


def demo_dataset(folder: Path, images: int = 96) -> Path:
    """The demo's generated shapes under `folder` (made on first use; PIL only, under a second)."""
    # Four of each shape × colour × background, each drawn near the middle at about one size: one
    # example a combination, or shapes strewn about, left 1000 steps too few to learn the shapes.
    return make_dataset(demo_parts(folder)[1], count=images, spread=0.5)


def demo_parts(folder: Path) -> tuple[Path, Path]:
    """Where the demo's tiny model and dataset live under `folder`: what the wizard points the
    sana-tiny-demo preset at (the model is built by `demo_model`, the dataset by `demo_dataset`)."""
    folder = Path(folder).resolve()
    return folder / "model", folder / "dataset"


def demo_validation() -> tuple[str, dict[str, str]]:
    """What the demo samples: one prompt every validation, the other shapes as its prompt library."""
    prompt = DEMO_PROMPTS["red_circle"]
    return prompt, {k: v for k, v in DEMO_PROMPTS.items() if v != prompt}


def write_demo_config(folder: Path, steps: int | None = None, *, model_dir: Path | None = None,
                      images: int = 96, output_dir: Path | None = None, isolated: bool = False,
                      **overrides: Any) -> Path:
    """A complete config folder for the demo under `folder` (model, dataset, configs); returns the config folder.

    `model_dir` reuses an already built tiny model; `isolated` builds the model in a child
    process, so this one never imports torch; `output_dir` defaults to `folder/output`;
    `overrides` replace config.json keys. The model, dataset and caches are shared between runs.
    """
    folder = Path(folder).resolve()
    model = Path(model_dir) if model_dir is not None else demo_model(demo_parts(folder)[0], isolated=isolated)
    dataset = demo_dataset(folder, images)
    config_dir = folder / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "pretrained_model_name_or_path": str(model),
        "output_dir": str(Path(output_dir).resolve() if output_dir else folder / "output"),
        "data_backend_config": str(config_dir / "multidatabackend.json"),
        "user_prompt_library": str(config_dir / "user_prompt_library.json"),
        "validation_prompt": demo_validation()[0],
    }
    datasets = [
        {"id": "shapes", "type": "local", "dataset_type": "image", "instance_data_dir": str(dataset),
         "cache_dir_vae": str(folder / "cache" / "vae" / "shapes")},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(folder / "cache" / "text")},
    ]
    config, datasets = apply_preset(load_preset(DEMO_PRESET), base, datasets)
    if steps is not None:
        config["max_train_steps"] = steps
    config.update(overrides)
    prompt, others = demo_validation()
    library = others if config["validation_prompt"] == prompt else dict(DEMO_PROMPTS)
    (config_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (config_dir / "multidatabackend.json").write_text(json.dumps(datasets, indent=2) + "\n")
    (config_dir / "user_prompt_library.json").write_text(json.dumps(library, indent=2) + "\n")
    return config_dir


def command(args: Any) -> int:
    """`tuner demo`: write the demo config, then train it in this process and watch."""
    from tuner.engine.runner import run, watch

    output = new_run_dir(Path(args.dir))
    config_dir = write_demo_config(Path(args.dir), steps=args.steps, output_dir=output)
    print(f"demo config: {config_dir}  (edit it and run `tuner train {config_dir}`)")
    code = watch(lambda listener: run(config_dir, output, listener), plain=args.plain, title="tuner demo: tiny Sana")
    print(f"validation images: {output / 'validation_images'}\npipeline: {output / 'pipeline'}")
    return code
