"""Every exported folder carries a README.md model card: Hub metadata that parses, the latest samples
as a gallery inside the folder, the settings, and code that loads it."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from engine_fixtures import demo_config, train_config
from tuner.engine import model_card
from tuner.engine.config.bundle import ConfigBundle
from tuner.engine.config.models import DatasetConfig, TrainConfig


def gallery_of(folder: Path) -> list[Path]:
    meta = model_card.front_matter(folder / "README.md")
    return [folder / item["output"]["url"] for item in meta.get("widget", [])]


def test_full_run_cards_both_exports_with_their_own_samples(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=2, validation_disable=False,
                         validation_step_interval=0, validation_num_inference_steps=2,
                         use_ema=True, ema_validation="comparison")
    result = train_config(config, tmp_path / "job")
    card = (result.pipeline / "README.md").read_text()
    meta = model_card.front_matter(result.pipeline / "README.md")
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-image"
    assert {"sana", "full-finetune"} <= set(meta["tags"])
    assert "base_model" not in meta   # a folder on this machine is no Hub id; the text names it instead
    assert f"`{tiny_sana}`" in card
    pictures = gallery_of(result.pipeline)
    assert sorted(p.name for p in pictures) == ["blue_square-64x64.png", "validation-64x64.png",
                                                "yellow_triangle-64x64.png"]
    assert all(p.is_file() and p.parent == result.pipeline / "images" for p in pictures)
    assert f'SanaPipeline.from_pretrained("{result.pipeline}"' in card
    assert "| steps | 2 |" in card
    # The EMA export's card shows what the EMA weights drew.
    ema = tmp_path / "output" / "pipeline-ema"
    assert sorted(p.name for p in gallery_of(ema)) == ["blue_square_ema-64x64.png", "validation_ema-64x64.png",
                                                       "yellow_triangle_ema-64x64.png"]
    assert "EMA weights" in (ema / "README.md").read_text()
    # The card and its pictures do not get in the way of loading the pipeline.
    from diffusers import SanaPipeline

    assert SanaPipeline.from_pretrained(result.pipeline).transformer is not None


def test_lokr_card_names_the_file_comfyui_loads(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=1, model_type="lora", lora_type="lycoris",
                         optimizer="adamw", mixed_precision="no")
    result = train_config(config, tmp_path / "job")
    card = (result.pipeline / "README.md").read_text()
    meta = model_card.front_matter(result.pipeline / "README.md")
    assert {"lycoris", "lokr"} <= set(meta["tags"])
    assert (result.pipeline / model_card.LOKR_WEIGHTS).is_file()
    assert f"put `{model_card.LOKR_WEIGHTS}`" in card and "load_lokr(pipe.transformer, folder)" in card
    assert "LoKr factor 16" in card
    assert "No validation samples were made" in card and "widget" not in meta


@dataclass
class Drawn:
    nickname: str
    prompt: str
    paths: list[Path]
    stills: list[Path] = field(default_factory=list)


def test_lora_card_has_hub_metadata_gallery_and_loading_code(tmp_path):
    out = tmp_path / "out" / "pipeline"
    out.mkdir(parents=True)
    (out / model_card.LORA_WEIGHTS).write_bytes(b"")
    (out / model_card.COMFY_WEIGHTS).write_bytes(b"")
    drawn = tmp_path / "validation_images" / "step-000100"
    drawn.mkdir(parents=True)
    Image.new("RGB", (32, 32), "orange").save(drawn / "corgi-32x32.png")
    bundle = ConfigBundle(
        train=TrainConfig(model_family="sd3", model_type="lora", lora_rank=8,
                          pretrained_model_name_or_path="stabilityai/stable-diffusion-3.5-medium",
                          hub_model_id="me/corgi-lora", output_dir=str(tmp_path / "out")),
        datasets=[DatasetConfig(id="corgi", type="local", dataset_type="image", instance_data_dir=str(tmp_path),
                                caption_strategy="instanceprompt", instance_prompt="a photo of sks corgi")],
        prompts={}, config_path=tmp_path / "config.json", databackend_path=None, prompts_path=None)
    samples = [(100, Drawn("corgi", "a photo of sks corgi | on a beach", [drawn / "corgi-32x32.png"]))]
    path = model_card.write_card(out, bundle, pipeline_class="StableDiffusion3Pipeline", step=100, samples=samples)

    text = path.read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["base_model"] == "stabilityai/stable-diffusion-3.5-medium"
    assert meta["instance_prompt"] == "a photo of sks corgi"
    assert {"lora", "sd3", "text-to-image"} <= set(meta["tags"])
    assert meta["widget"] == [{"text": "a photo of sks corgi | on a beach", "output": {"url": "images/corgi-32x32.png"}}]
    assert (out / "images" / "corgi-32x32.png").is_file()
    assert 'pipe.load_lora_weights("me/corgi-lora", weight_name="pytorch_lora_weights.safetensors")' in text
    assert 'prompt = "a photo of sks corgi"' in text
    assert f"put `{model_card.COMFY_WEIGHTS}` in `ComfyUI/models/loras/`" in text
    assert "\\| on a beach" in text   # a | in a prompt does not break the gallery's table
    assert "| training | LoRA rank 8, alpha 8 |" in text


def test_the_card_names_the_files_the_adapters_write():
    from tuner.engine import adapters

    assert (model_card.LORA_WEIGHTS, model_card.COMFY_WEIGHTS, model_card.LOKR_WEIGHTS, model_card.LOKR_CONFIG) == (
        adapters.LORA_WEIGHTS, adapters.COMFY_WEIGHTS, adapters.LOKR_WEIGHTS, adapters.LOKR_CONFIG)


def test_card_and_hub_modules_load_no_torch():
    code = ("import sys, json, tuner.engine.model_card, tuner.engine.hub; "
            "print(json.dumps([m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
