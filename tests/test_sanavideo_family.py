"""The Sana Video family on the tiny model: pipeline-identical embeddings, normalised Wan latents, the
checkpoint's own schedule, video sampling and previews, and group offload."""
from __future__ import annotations

import inspect
import json

import pytest
import torch

from tuner.engine import offload
from tuner.engine.config import TrainConfig
from tuner.engine.models.base import family_class
from tuner.engine.models.sanavideo import SanaVideoFamily, scheduler_shift


def make_cfg(model, **extra):
    base = dict(pretrained_model_name_or_path=str(model), validation_num_video_frames=5, framerate=8)
    return TrainConfig(model_family="sanavideo", **{**base, **extra})


@pytest.fixture(scope="module")
def family(tiny_sanavideo):
    return SanaVideoFamily(make_cfg(tiny_sanavideo), torch.device("cpu"), torch.float32)


def test_family_is_registered_with_its_pipeline(family):
    from diffusers import SanaVideoPipeline

    assert family_class("sanavideo") is SanaVideoFamily
    assert family.pipeline_class is SanaVideoPipeline
    assert (family.pixel_alignment, family.temporal_compression, family.latent_channels) == (16, 4, 16)


def test_prompt_embeddings_match_the_video_pipeline(family, tiny_sanavideo):
    from diffusers import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(tiny_sanavideo)
    # What SanaVideoPipeline.__call__ does with a prompt: its own default instruction, 300 tokens.
    instruction = inspect.signature(SanaVideoPipeline.__call__).parameters["complex_human_instruction"].default
    with torch.no_grad():
        expected, mask, _, _ = pipe.encode_prompt("a red circle moving right", do_classifier_free_guidance=False,
                                                  max_sequence_length=300, complex_human_instruction=instruction)
    ours = family.encode_prompts(["a red circle moving right"])[0]
    assert torch.equal(ours["prompt_embeds"], expected[0])
    assert torch.equal(ours["prompt_attention_mask"], mask[0])
    # The video instruction, not Sana's image one, is prepended.
    assert "video generation" in " ".join(family.instruction)


def test_latents_are_normalised_with_the_vae_configs_mean_and_std(family, tiny_sanavideo):
    pixels = torch.rand(1, 3, 5, 64, 64) * 2 - 1
    latents = family.encode_pixels(pixels)
    assert latents.shape == (1, 16, 2, 8, 8)
    raw = family.vae.encode(pixels).latent_dist.mode()
    config = json.loads((tiny_sanavideo / "vae" / "config.json").read_text())
    mean = torch.tensor(config["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(config["latents_std"]).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latents, (raw - mean) / std)
    # decode_latents undoes the normalisation before the VAE's decoder.
    torch.testing.assert_close(family.decode_latents(latents), family.vae.decode(raw).sample.clamp(-1, 1),
                               rtol=1e-4, atol=1e-4)


def test_training_uses_the_checkpoints_shift_and_ignores_the_users(tiny_sanavideo):
    users = make_cfg(tiny_sanavideo, flow_schedule_shift=0.1, flow_schedule_auto_shift=True)
    family = SanaVideoFamily(users, torch.device("cpu"), torch.float32)
    assert users.family.fixed_schedule
    assert family.training_shift(torch.zeros(1, 16, 2, 8, 8)) == 8.0
    assert scheduler_shift({"shift": 3.0}) == 3.0
    assert scheduler_shift({"flow_shift": 5.0, "use_flow_sigmas": False}) == 1.0
    assert scheduler_shift({}) == 1.0


def test_generate_returns_the_frames_and_previews_the_middle_frame(family):
    model = family.load_transformer()
    text = family.encode_prompts(["a red circle"])[0]
    seen = []
    frames = family.generate(model, text, family.empty_prompt(), 64, 64, 2, 3.0, 0,
                             on_step=lambda k, n, latents: seen.append((k, n, tuple(latents.shape))))
    assert len(frames) == 5 and frames[0].size == (64, 64)
    assert seen == [(1, 2, (1, 16, 2, 8, 8)), (2, 2, (1, 16, 2, 8, 8))]
    assert family.decode_preview(torch.randn(1, 16, 3, 8, 8)).size == (64, 64)
    # Frame counts the VAE cannot make are trimmed to 4k+1.
    assert len(family.generate(model, text, family.empty_prompt(), 64, 64, 1, 1.0, 0, frames=8)) == 5


def test_group_offload_takes_the_frozen_text_encoder_and_never_the_trained_transformer(tiny_sanavideo, tmp_path):
    cfg = make_cfg(tiny_sanavideo, enable_group_offload=True, group_offload_type="block_level",
                   group_offload_blocks_per_group=1, group_offload_use_stream=True,
                   group_offload_to_disk_path=str(tmp_path / "offload"), gradient_checkpointing=True)
    fam = SanaVideoFamily(cfg, torch.device("cpu"), torch.float32)
    model = fam.load_transformer()
    # diffusers' hooks move weights back to the CPU after each forward: training cannot follow (offload.py).
    assert not offload.is_offloaded(model) and not (tmp_path / "offload" / "transformer").exists()
    with pytest.warns(UserWarning, match="group_offload_use_stream ignored"):
        text = fam.collate_text(fam.encode_prompts(["a red circle", "a blue square"]))
    assert offload.is_offloaded(fam.text_encoder)
    assert any((tmp_path / "offload" / "text_encoder").iterdir()), "the frozen text encoder was not offloaded to disk"
    out = fam.predict(model, torch.randn(2, 16, 2, 8, 8), torch.tensor([0.2, 0.8]), text)
    out.pow(2).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.transformer_blocks.parameters())
    with pytest.raises(ValueError, match="frozen modules only"):
        offload.apply(model, cfg, torch.device("cpu"), name="transformer")
    assert "stays on the GPU" in offload.training_warning(cfg) and offload.training_warning(make_cfg(tiny_sanavideo)) is None


def test_offload_settings_follow_the_config():
    cfg = TrainConfig(group_offload_type="leaf_level", group_offload_blocks_per_group=3)
    kwargs = offload.settings(cfg, torch.device("cpu"))
    assert kwargs["offload_type"] == "leaf_level" and "num_blocks_per_group" not in kwargs
    cfg.group_offload_type = "block_level"
    assert offload.settings(cfg, torch.device("cpu"))["num_blocks_per_group"] == 3
    with pytest.raises(ValueError, match="enable_model_cpu_offload"):
        offload.apply(torch.nn.Linear(2, 2), cfg.model_copy(update={"enable_model_cpu_offload": True}),
                      torch.device("cpu"))


def test_group_offload_with_model_cpu_offload_is_refused_by_the_config_check(tmp_path, tiny_sanavideo):
    from tuner.engine.config import ConfigError, load_bundle
    from video_fixtures import video_config

    config = video_config(tmp_path, tiny_sanavideo, enable_group_offload=True, enable_model_cpu_offload=True)
    with pytest.raises(ConfigError, match="enable_model_cpu_offload"):
        load_bundle(config)
