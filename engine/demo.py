"""The built-in demo's own parts: a generated dataset of coloured shapes, its prompts, its tiny Sana.

Torch-free to import: the model is built only when asked for, and `demo_model(..., isolated=True)`
builds it in a child process so a client (`tunerd demo`) never loads torch. The demo's training
recipe is a preset (presets/sana-tiny-demo.toml); `tuner.presets.demo` puts these parts and that
preset together into a config folder, so the engine never imports the presets.
"""
from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

from tuner.engine.tiny.common import is_complete

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 40)}
BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle")


def caption(colour: str, shape: str, background: str) -> str:
    """The one way the demo words an image, in its dataset and its prompts alike."""
    return f"a {colour} {shape} on a {background} background"


def all_captions() -> list[str]:
    """Every caption the demo dataset can have (the demo's text encoder keeps their words apart)."""
    return [caption(c, s, b) for s in SHAPES for c in COLOURS for b in BACKGROUNDS]


DEMO_PROMPTS = {
    "red_circle": caption("red", "circle", "white"),
    "blue_square": caption("blue", "square", "black"),
    "yellow_triangle": caption("yellow", "triangle", "white"),
}
DEMO_MODEL_FAMILY = "sana-demo"   # the tiny builder's name for its demo-sized Sana
_BUILD_IN_CHILD = "import sys; from tuner.engine.tiny import build_tiny_sana; build_tiny_sana(sys.argv[1], size='demo')"


def draw_shape(shape: str, colour: str, background: str, size: int, rng: random.Random,
               spread: float = 1.0) -> Image.Image:
    """One dataset image: a filled shape of some size and position on a plain background.

    `spread` scales how far size and position stray from a centred shape of radius 0.28 × size
    (1: radius 0.22–0.34, centre 0.4–0.6 of the side).
    """
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    r = (0.28 + (rng.uniform(0.22, 0.34) - 0.28) * spread) * size
    cx, cy = ((0.5 + (rng.uniform(0.4, 0.6) - 0.5) * spread) * size for _ in range(2))
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=fill)
    return img


def make_dataset(folder: Path, count: int = 24, size: int = 128, seed: int = 0, spread: float = 1.0) -> Path:
    """Coloured shapes with a caption file each, every combination in turn; regenerated only when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.png"))) >= count:
        return folder
    rng = random.Random(seed)
    combos = [(s, c, b) for s in SHAPES for c in COLOURS for b in BACKGROUNDS]
    rng.shuffle(combos)
    for i in range(count):
        shape, colour, background = combos[i % len(combos)]
        name = f"{i:03d}-{colour}-{shape}"
        draw_shape(shape, colour, background, size, rng, spread).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(caption(colour, shape, background) + "\n")
    return folder


def demo_model(out: Path, *, isolated: bool = False) -> Path:
    """The demo's tiny Sana at `out`, built on first use (torch and diffusers load only then).

    `isolated` builds it in a child process, so that this process never imports torch.
    """
    out = Path(out)
    if is_complete(out, family=DEMO_MODEL_FAMILY):
        return out
    if not isolated:
        from tuner.engine.tiny import build_tiny_sana

        return build_tiny_sana(out, size="demo")
    done = subprocess.run([sys.executable, "-c", _BUILD_IN_CHILD, str(out)], capture_output=True, text=True)
    if done.returncode != 0 or not is_complete(out, family=DEMO_MODEL_FAMILY):
        raise RuntimeError(f"building the demo's tiny Sana in {out} failed (exit {done.returncode}):\n"
                           f"{done.stderr.strip()[-2000:]}")
    return out


def new_run_dir(folder: Path) -> Path:
    """A fresh output folder for one demo run (earlier runs' results stay where they are)."""
    return Path(folder).resolve() / "runs" / time.strftime("%Y%m%d-%H%M%S")
