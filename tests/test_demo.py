"""The README's main command: `tunerd demo` prepares the demo, starts a daemon, trains, and shows it;
and what it trains draws what its prompts say."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tunerd_demo_trains_through_a_fresh_daemon(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNER_DATA_DIR": str(tmp_path / "data"),
           "TUNER_RUNTIME_DIR": str(tmp_path / "run")}
    tunerd = str(Path(sys.executable).with_name("tunerd"))
    try:
        proc = subprocess.run([tunerd, "demo", "--dir", str(tmp_path / "demo"), "--steps", "8"], env=env,
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "started tunerd" in proc.stdout
        runs = list((tmp_path / "demo" / "runs").iterdir())
        assert len(runs) == 1
        assert (runs[0] / "pipeline" / "model_index.json").is_file()
        assert list((runs[0] / "validation_images").rglob("*.png"))
        listing = subprocess.run([tunerd, "list"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "sana-tiny-demo" in listing and "done" in listing
    finally:
        subprocess.run([tunerd, "stop"], env=env, capture_output=True, timeout=60)


# The demo client's path up to the submit, with the daemon stubbed: what it imports, and what it submits.
CLIENT = """
import argparse, json, sys
from pathlib import Path
import tuner.daemon.demo as demo

submitted = []


class FakeClient:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def request(self, verb, **fields):
        submitted.append({"verb": verb, **fields})
        return {"job": {"id": "demo-1"}}


demo.lifecycle.start = lambda: (True, {})
demo.Client = FakeClient
code = demo.run_demo(argparse.Namespace(dir=sys.argv[1], steps=8, no_attach=True))
print(json.dumps({"code": code, "submitted": submitted,
                  "loaded": [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]}))
"""


def test_the_demo_client_prepares_and_submits_without_importing_torch(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNER_DATA_DIR": str(tmp_path / "data"),
           "TUNER_RUNTIME_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "demo")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"the tunerd demo client imported {result['loaded']}"
    assert result["code"] == 0
    [submit] = result["submitted"]
    assert submit["verb"] == "submit" and submit["name"] == "sana-tiny-demo" and submit["gpus"] == 0
    # What it submitted is a whole demo: the tiny model was built (in a child process) and the config points at it.
    config = json.loads((Path(submit["path"]) / "config.json").read_text())
    model = Path(config["pretrained_model_name_or_path"])
    assert (model / "model_index.json").is_file() and (model / "transformer").is_dir()
    assert config["max_train_steps"] == 8


# --- what the demo learns -------------------------------------------------------------------------

# Fill of its bounding box: a square's is ~1, a circle's π/4 ≈ 0.79, the demo's triangle ~0.6
# (through the VAE). Between circle and square, a rounded square still counts as a square.
SQUARE_FILL = 0.87


def what_it_shows(image) -> dict:
    """What a demo image shows, read off its pixels: background (the border's colour), the shape's
    colour (the middle's), its shape, and the figures they were judged by."""
    import numpy as np

    from tuner.engine.demo import BACKGROUNDS, COLOURS

    names = [*COLOURS, *BACKGROUNDS]
    palette = np.array([{**COLOURS, **BACKGROUNDS}[n] for n in names], float)
    pixels = np.asarray(image.convert("RGB"), float)
    nearest = ((pixels[..., None, :] - palette) ** 2).sum(-1).argmin(-1)  # each pixel's palette colour
    h, w = nearest.shape
    edge = np.concatenate([nearest[:2].ravel(), nearest[-2:].ravel(), nearest[:, :2].ravel(), nearest[:, -2:].ravel()])
    background = int(np.bincount(edge, minlength=len(names)).argmax())
    middle = nearest[h * 3 // 8:h * 5 // 8, w * 3 // 8:w * 5 // 8]
    colour = int(np.bincount(middle.ravel(), minlength=len(names)).argmax())
    seen = {"background": names[background], "border_share": round(float((edge == background).mean()), 2),
            "colour": names[colour], "middle_share": round(float((middle == colour).mean()), 2), "shape": None}
    shape = nearest == colour
    rows, cols = np.flatnonzero(shape.mean(1) > 0.05), np.flatnonzero(shape.mean(0) > 0.05)
    if colour == background or not len(rows) or not len(cols):
        return seen
    box = shape[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    half = len(box) // 2
    fill, widening = float(box.mean()), float(box[half:].mean() - box[:half].mean())
    if widening >= 0.25 and fill < 0.8:  # an upright triangle is wider at the bottom than the top
        seen["shape"] = "triangle"
    elif abs(widening) < 0.2 and fill >= 0.65:
        seen["shape"] = "square" if fill >= SQUARE_FILL else "circle"
    seen.update(fill=round(fill, 2), widening=round(widening, 2))
    return seen


def test_the_judge_reads_the_demo_dataset_right(tmp_path):
    # The judge itself, on the demo's own drawings: every image's words come out of its pixels.
    from PIL import Image

    from tuner.engine.demo import make_dataset

    folder = make_dataset(tmp_path / "shapes", count=24, spread=0.5)
    for image in sorted(folder.glob("*.png")):
        _, colour, shape, _, _, background, _ = image.with_suffix(".txt").read_text().split()
        seen = what_it_shows(Image.open(image).resize((64, 64), Image.BICUBIC))
        assert (seen["colour"], seen["shape"], seen["background"]) == (colour, shape, background), (image.name, seen)


@pytest.fixture(scope="module")
def demo_sana(tmp_path_factory):
    from tuner.engine.demo import demo_model

    return demo_model(tmp_path_factory.mktemp("demo-sana") / "model")


def test_the_demo_text_encoder_keeps_the_caption_words_apart(demo_sana):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from tuner.engine.demo import DEMO_PROMPTS

    tokenizer = AutoTokenizer.from_pretrained(demo_sana, subfolder="tokenizer")
    encoder = AutoModel.from_pretrained(demo_sana, subfolder="text_encoder").eval()
    tokenizer.padding_side = "right"
    tokens = tokenizer(list(DEMO_PROMPTS.values()), padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        states = encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0]
    # "a red circle on a white background" vs "a blue square on a black background": word for word,
    # the shared words encode alike and the differing ones (colour, shape, background) are orthogonal.
    red, blue, yellow = torch.nn.functional.normalize(states, dim=-1)
    same = (tokens.input_ids[0] == tokens.input_ids[1]) & tokens.attention_mask[0].bool()
    differ = (tokens.input_ids[0] != tokens.input_ids[1]) & tokens.attention_mask[0].bool()
    cos = (red * blue).sum(-1)
    assert differ.sum() == 3 and cos[differ].abs().max() < 1e-4 and cos[same].min() > 0.999
    assert (red * yellow).sum(-1)[tokens.input_ids[0] != tokens.input_ids[2]].abs().max() < 1e-4


def test_the_demo_vae_keeps_colours_and_smooths_its_4x_upsampling(demo_sana):
    import random

    import numpy as np
    import torch
    from diffusers import AutoencoderDC

    from tuner.engine.demo import BACKGROUNDS, COLOURS, draw_shape

    vae = AutoencoderDC.from_pretrained(demo_sana, subfolder="vae")
    image = draw_shape("square", "blue", "white", 64, random.Random(0))
    pixels = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent
        back = vae.decode(latents).sample.clamp(-1, 1)
    assert latents.shape[-2:] == (16, 16)
    out = ((back[0].permute(1, 2, 0).numpy() + 1) * 127.5).round()
    assert np.abs(out[32, 32] - COLOURS["blue"]).max() <= 2 and np.abs(out[0, 0] - BACKGROUNDS["white"]).max() <= 2
    # bilinear, not nearest: across the square's edges the four pixels a latent covers differ
    row = out[32, :, 0]
    assert any(len(set(row[i:i + 4])) > 1 for i in range(0, 64, 4))


@pytest.mark.slow
def test_the_demo_draws_what_its_prompts_say(tmp_path, demo_sana):
    """The demo's own recipe, 1000 steps: at the last validation and the one before, every prompt's
    image (trained weights and EMA) shows its shape in its colour on its background."""
    from PIL import Image

    from tuner.engine.demo import DEMO_PROMPTS
    from tuner.engine.runner import run
    from tuner.presets.demo import write_demo_config

    config_dir = write_demo_config(tmp_path / "demo", model_dir=demo_sana, output_dir=tmp_path / "run")
    assert run(config_dir, tmp_path / "run") == 0
    config = json.loads((config_dir / "config.json").read_text())
    steps, every = config["max_train_steps"], config["validation_step_interval"]
    nicknames = {"validation" if prompt == config["validation_prompt"] else nick: prompt
                 for nick, prompt in DEMO_PROMPTS.items()}
    wrong = []
    for step in (steps - every, steps):
        for nickname, prompt in nicknames.items():
            _, colour, shape, _, _, background, _ = prompt.split()
            for weights in ("", "_ema"):
                path = tmp_path / "run" / "validation_images" / f"step-{step:06d}" / f"{nickname}{weights}-64x64.png"
                seen = what_it_shows(Image.open(path))
                if (seen["colour"], seen["shape"], seen["background"]) != (colour, shape, background) \
                        or seen["border_share"] < 0.9 or seen["middle_share"] < 0.6:
                    wrong.append(f"{path.relative_to(tmp_path)} for {prompt!r}: {seen}")
    assert wrong == [], "\n".join(wrong)
