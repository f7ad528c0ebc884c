"""The Sana Video engine end to end on the tiny model and generated clips: it learns, resumes exactly,
writes validation videos with the configured length and rate, and runs with group offload and CREPA."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine_fixtures import edit_config, events_of, train_config
from tuner.engine.data.video import probe_video
from tuner.engine.train import crepa as crepa_module
from video_fixtures import video_config


def test_overfit_four_clips_loss_falls(tmp_path, tiny_sanavideo):
    config = video_config(tmp_path, tiny_sanavideo, clips=4, max_train_steps=40, train_batch_size=4,
                          learning_rate=2e-3)
    losses = [loss for _, loss in train_config(config, tmp_path / "job").losses]
    start, end = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert len(losses) == 40
    assert end < 0.75 * start, f"loss did not fall: first 5 steps {start:.3f}, last 5 {end:.3f}"


def test_resume_continues_exactly(tmp_path, tiny_sanavideo):
    opts = dict(max_train_steps=6, caption_dropout_probability=0.3, use_ema=True, ema_validation="none")
    full = train_config(video_config(tmp_path / "a", tiny_sanavideo, **opts), tmp_path / "a" / "job").losses
    split = video_config(tmp_path / "b", tiny_sanavideo, **opts)
    first = train_config(split, tmp_path / "b" / "job", stop_after=3)
    assert first.stopped and first.step == 3
    edit_config(split, resume_from_checkpoint="latest")
    second = train_config(split, tmp_path / "b" / "job")
    assert [s for s, _ in second.losses] == [4, 5, 6]
    for (step, expected), (_, got) in zip(full[3:], second.losses):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"step {step} differs after resume"


def test_validation_video_has_the_configured_frames_and_rate(tmp_path, tiny_sanavideo):
    config = video_config(tmp_path, tiny_sanavideo, max_train_steps=2, validation_disable=False,
                          validation_step_interval=2, validation_resolution="64,96x64",
                          validation_num_video_frames=9, framerate=12, validation_num_inference_steps=4,
                          validation_preview=True, validation_preview_steps=2)
    job = tmp_path / "job"
    result = train_config(config, job)
    videos = sorted((tmp_path / "output" / "validation_images").rglob("*.mp4"))
    assert [v.name for v in videos] == ["validation-64x64.mp4", "validation-96x64.mp4"]
    for video, size in zip(videos, [(64, 64), (96, 64)]):
        info = probe_video(video)
        assert (info["frames"], info["fps"], (info["width"], info["height"])) == (9, 12.0, size)
        assert video.with_name(video.stem + "-strip.png").is_file()
    event = events_of(job, "validation")[-1]
    assert [Path(p).suffix for p in event["paths"]] == [".mp4", ".mp4"] and len(event["stills"]) == 2
    previews = events_of(job, "preview")
    assert [e["k"] for e in previews] == [2, 4, 2, 4]
    assert all(Path(e["path"]).is_file() for e in previews)
    # The exported pipeline loads in diffusers and makes a clip.
    from diffusers import SanaVideoPipeline

    pipe = SanaVideoPipeline.from_pretrained(result.pipeline)
    frames = pipe("a red circle", num_inference_steps=1, height=64, width=64, frames=5,
                  use_resolution_binning=False, generator=torch.Generator().manual_seed(0)).frames[0]
    assert len(frames) == 5


def test_group_offload_run_trains_with_finite_loss(tmp_path, tiny_sanavideo):
    config = video_config(tmp_path, tiny_sanavideo, max_train_steps=3, enable_group_offload=True,
                          group_offload_type="leaf_level", group_offload_use_stream=True,
                          gradient_checkpointing=True)
    result = train_config(config, tmp_path / "job")
    assert len(result.losses) == 3 and all(math.isfinite(loss) for _, loss in result.losses)
    assert (result.pipeline / "transformer").is_dir()


def tiny_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    return Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32, patch_size=14, image_size=28))


def test_crepa_run_trains_and_checkpoints_its_head(tmp_path, tiny_sanavideo, monkeypatch):
    encoder = tiny_dinov2()
    monkeypatch.setattr(crepa_module, "load_encoder",
                        lambda name, size, device, dtype: crepa_module.FrameEncoder(encoder, size))
    opts = dict(max_train_steps=4, crepa_enabled=True, crepa_block_index=1, crepa_encoder="dinov2_vits14",
                crepa_encoder_image_size=28, crepa_lambda=0.5)
    with_crepa = train_config(video_config(tmp_path / "a", tiny_sanavideo, **opts), tmp_path / "a" / "job")
    plain = train_config(video_config(tmp_path / "b", tiny_sanavideo, max_train_steps=4), tmp_path / "b" / "job")
    assert all(math.isfinite(loss) for _, loss in with_crepa.losses)
    # The reported loss carries CREPA's term on top of the same flow loss (same seed, same data).
    assert with_crepa.losses[0][1] > plain.losses[0][1]
    assert (with_crepa.checkpoint / crepa_module.HEAD_FILE).is_file()


def test_max_grad_norm_clips_the_crepa_head_with_the_model(tmp_path, tiny_sanavideo, monkeypatch):
    """One norm over everything the optimizer steps: the head's gradient is clipped with the model's."""
    encoder = tiny_dinov2()
    monkeypatch.setattr(crepa_module, "load_encoder",
                        lambda name, size, device, dtype: crepa_module.FrameEncoder(encoder, size))
    norms = []
    step = torch.optim.AdamW.step

    def measured(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", measured)
    limit = 1e-3
    train_config(video_config(tmp_path, tiny_sanavideo, max_train_steps=2, optimizer="adamw", crepa_enabled=True,
                              crepa_block_index=1, crepa_encoder="dinov2_vits14", crepa_encoder_image_size=28,
                              crepa_lambda=1.0, max_grad_norm=limit, grad_clip_method="norm"), tmp_path / "job")
    assert len(norms) == 2 and all(n <= limit * 1.0001 for n in norms), norms


def test_crepa_weights_decay_with_distance_and_stop_past_it(tiny_sanavideo):
    from types import SimpleNamespace

    cfg = SimpleNamespace(crepa_adjacent_distance=1, crepa_adjacent_tau=2.0)
    weights = crepa_module.CREPA._weights(SimpleNamespace(cfg=cfg), 4)
    assert weights[1, 1] == 1.0 and weights[1, 2] == pytest.approx(math.exp(-0.5)) and weights[0, 2] == 0.0


def test_missing_crepa_encoder_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(crepa_module.EncoderMissing) as err:
        crepa_module.load_encoder("dinov2_vitg14", 518, torch.device("cpu"), torch.float32)
    message = str(err.value)
    assert str(tmp_path / "torch") in message and "facebook/dinov2-giant" in message
    assert "huggingface-cli download facebook/dinov2-giant" in message and "crepa_enabled: false" in message


def test_crepa_block_index_past_the_model_is_a_config_error(tmp_path, tiny_sanavideo, monkeypatch):
    from tuner.engine.config import TrainConfig
    from tuner.engine.models.sanavideo import SanaVideoFamily

    cfg = TrainConfig(model_family="sanavideo", pretrained_model_name_or_path=str(tiny_sanavideo),
                      crepa_block_index=10)
    family = SanaVideoFamily(cfg, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match=r"crepa_block_index 10 is not a block of this model \(2 blocks\)"):
        crepa_module.CREPA(cfg, family, family.load_transformer(), torch.device("cpu"),
                           encoder=crepa_module.FrameEncoder(tiny_dinov2(), 28))


def test_the_16gb_tier_recipe_lokr_on_int8_trains(tmp_path, tiny_sanavideo):
    # presets/sanavideo-2b-16gb-lokr-int8.toml: an adapter on a quantised base, since full-rank cannot be quantised.
    config = video_config(tmp_path, tiny_sanavideo, max_train_steps=3, model_type="lora", lora_type="lycoris",
                          base_model_precision="int8-quanto", gradient_checkpointing=True)
    result = train_config(config, tmp_path / "job")
    assert len(result.losses) == 3 and all(math.isfinite(loss) for _, loss in result.losses)
    assert (result.pipeline / "lycoris_weights.safetensors").is_file()
