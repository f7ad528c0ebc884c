"""The real engine on the tiny SD3: it learns, resumes exactly, validates with skip-layer guidance, exports."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine_fixtures import demo_config, edit_config, events_of, train_config
from tuner.engine.config import load_bundle
from tuner.engine.config.rules import run_rules


def sd3_config(tmp: Path, model: Path, **overrides) -> Path:
    config = demo_config(tmp, model, model_family="sd3", model_type="full", **overrides)
    errors = [issue for issue in run_rules(load_bundle(config)) if issue.level == "error"]
    assert not errors, errors
    return config


def test_overfit_four_images_loss_falls(tmp_path, tiny_sd3):
    config = sd3_config(tmp_path, tiny_sd3, images=4, max_train_steps=60, train_batch_size=4,
                        learning_rate=2e-3, optimizer="adamw", flow_use_uniform_schedule=False)
    result = train_config(config, tmp_path / "job")
    losses = [loss for _, loss in result.losses]
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert len(losses) == 60
    assert end < 0.6 * start, f"loss did not fall enough: first 10 steps {start:.3f}, last 10 {end:.3f}"


def test_resume_continues_exactly(tmp_path, tiny_sd3):
    settings = dict(max_train_steps=10, caption_dropout_probability=0.3, use_ema=True,
                    sd3_t5_uncond_behaviour="zero", flow_schedule_auto_shift=True)
    full = train_config(sd3_config(tmp_path / "a", tiny_sd3, **settings), tmp_path / "a" / "job").losses

    split = sd3_config(tmp_path / "b", tiny_sd3, **settings)
    first = train_config(split, tmp_path / "b" / "job", stop_after=5)
    assert first.stopped and first.step == 5
    edit_config(split, resume_from_checkpoint="latest")
    second = train_config(split, tmp_path / "b" / "job")
    assert [s for s, _ in second.losses] == list(range(6, 11))
    for (step, expected), (_, got) in zip(full[5:], second.losses):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"step {step} differs after resume"


def test_validation_with_skip_layer_guidance_and_export_loads_in_diffusers(tmp_path, tiny_sd3):
    config = sd3_config(tmp_path, tiny_sd3, max_train_steps=2, validation_disable=False, validation_step_interval=2,
                        validation_num_inference_steps=4, validation_preview=True, validation_preview_steps=2,
                        validation_resolution="64", validation_guidance_skip_layers=[1],
                        tokenizer_max_length=77, t5_padding="zero")
    job = tmp_path / "job"
    result = train_config(config, job)
    images = sorted((tmp_path / "output" / "validation_images").rglob("*.png"))
    assert images and all(p.parent.name == "step-000002" for p in images)
    previews = events_of(job, "preview")
    assert [e["k"] for e in previews[:2]] == [2, 4] and len(previews) == 2 * len(images)

    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(result.pipeline)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64, max_sequence_length=77,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    trained = pipe.transformer.state_dict()
    base = StableDiffusion3Pipeline.from_pretrained(tiny_sd3).transformer.state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base), "the exported weights are the untrained ones"
