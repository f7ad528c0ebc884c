"""The tiny Sana builder: deterministic, cached, loadable by diffusers, and a VAE that round-trips."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tuner.engine import cli
from tuner.engine.tiny import MARKER, TINY_SANA_VERSION, build_tiny_sana, tiny_tokenizer


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_other_seed_other_weights(tmp_path, tiny_sana):
    again = build_tiny_sana(tmp_path / "again", seed=0)
    assert _files(again) == _files(tiny_sana)
    other = build_tiny_sana(tmp_path / "other", seed=1)
    name = "transformer/diffusion_pytorch_model.safetensors"
    assert _files(other)[name] != _files(tiny_sana)[name]


def test_layout_is_what_sana_pipeline_writes(tiny_sana):
    index = json.loads((tiny_sana / "model_index.json").read_text())
    assert index["_class_name"] == "SanaPipeline"
    assert {"transformer", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    marker = json.loads((tiny_sana / MARKER).read_text())
    assert marker["version"] == TINY_SANA_VERSION and marker["seed"] == 0


def test_complete_folder_is_reused_and_broken_one_rebuilt(tmp_path):
    out = build_tiny_sana(tmp_path / "m")
    weights = out / "vae" / "diffusion_pytorch_model.safetensors"
    stamp = weights.stat().st_mtime_ns
    build_tiny_sana(out)
    assert weights.stat().st_mtime_ns == stamp
    weights.unlink()
    (out / "vae" / "config.json").unlink()
    (out / "vae").rmdir()
    build_tiny_sana(out)
    assert weights.is_file()


def test_caption_words_are_single_tokens_and_any_text_tokenizes():
    tok = tiny_tokenizer()
    assert tok.tokenize("a photo of a red circle on a blue background") == [
        "a", "▁photo", "▁of", "▁a", "▁red", "▁circle", "▁on", "▁a", "▁blue", "▁background"]
    ids = tok("Ünïcode 🙂 and digits 123")["input_ids"]
    assert tok.unk_token_id not in ids
    assert ids[0] == tok.bos_token_id


def test_loads_with_sana_pipeline_and_generates_64px(tiny_sana):
    from diffusers import SanaPipeline

    pipe = SanaPipeline.from_pretrained(tiny_sana)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", height=64, width=64, num_inference_steps=2, use_resolution_binning=False,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_vae_round_trip_keeps_the_image_at_half_resolution(tiny_sana):
    from diffusers import AutoencoderDC

    vae = AutoencoderDC.from_pretrained(tiny_sana, subfolder="vae")
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(pixels).latent
        decoded = vae.decode(latents).sample
    assert latents.shape == (1, 4, 32, 32)
    blurred = F.interpolate(F.avg_pool2d(pixels, 2), scale_factor=2, mode="nearest")
    assert (decoded - blurred).abs().max() < 0.01


@pytest.mark.parametrize("family", ["sana"])
def test_cli_builds_and_reports(tmp_path, capsys, family):
    assert cli.main(["tiny", family, str(tmp_path / "cli")]) == 0
    assert "tiny sana" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model_index.json").is_file()
