"""Image-to-video training (`video.is_i2v`): each clip's first frame is given to the model clean, as
diffusers' Sana Video image-to-video pipeline samples, and the model learns the frames after it."""
from __future__ import annotations

import math

import torch

from engine_fixtures import train_config
from tuner.engine import flow
from tuner.engine.config import load_bundle
from video_fixtures import video_config


def test_the_first_frame_is_given_clean_at_timestep_zero_and_left_out_of_the_loss() -> None:
    latents = torch.randn(2, 4, 3, 2, 2)
    noise = torch.randn_like(latents)
    sigmas = torch.tensor([0.3, 0.9])
    noisy = flow.noisy_latents(latents, noise, sigmas)
    given, per_frame, weight = flow.condition_on_first_frame(noisy, latents[:, :, :1], sigmas)
    assert torch.equal(given[:, :, 0], latents[:, :, 0]) and torch.equal(given[:, :, 1:], noisy[:, :, 1:])
    assert torch.allclose(per_frame, torch.tensor([[0.0, 0.3, 0.3], [0.0, 0.9, 0.9]]))
    # Whatever the model says about the given frame costs nothing.
    goal = flow.target(latents, noise)
    wrong_first = goal.clone()
    wrong_first[:, :, 0] += 100.0
    assert torch.isclose(flow.loss(wrong_first, goal, weight), torch.tensor(0.0))
    assert torch.isclose(flow.loss(goal + 1.0, goal, weight), torch.tensor(1.0))


def test_one_timestep_per_frame_is_laid_out_per_token_as_the_pipeline_does(tmp_path, tiny_sanavideo) -> None:
    from tuner.engine.models.sanavideo import SanaVideoFamily

    bundle = load_bundle(video_config(tmp_path, tiny_sanavideo))
    family = SanaVideoFamily(bundle.train, torch.device("cpu"), torch.float32)
    model = family.load_transformer()
    torch.manual_seed(0)
    noisy = torch.randn(2, 16, 2, 8, 8)
    text = {"prompt_embeds": torch.randn(2, 8, model.config.caption_channels),
            "prompt_attention_mask": torch.ones(2, 8, dtype=torch.long)}
    sigmas = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        per_sample = family.predict(model, noisy, sigmas, text)
        same_per_frame = family.predict(model, noisy, sigmas[:, None].expand(2, 2), text)
        first_clean = family.predict(model, noisy, torch.tensor([[0.0, 0.25], [0.0, 0.75]]), text)
    assert torch.allclose(per_sample, same_per_frame, atol=1e-5)
    assert not torch.allclose(per_sample, first_clean, atol=1e-3)


def test_an_image_to_video_dataset_trains(tmp_path, tiny_sanavideo) -> None:
    config = video_config(tmp_path, tiny_sanavideo, clips=4, frames=9, video={"is_i2v": True},
                          max_train_steps=20, train_batch_size=4, learning_rate=2e-3)
    losses = [loss for _, loss in train_config(config, tmp_path / "job").losses]
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
