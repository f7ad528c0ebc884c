"""Rectified-flow objective: noise levels (sigmas), timestep shift, noisy inputs and the target.

x_sigma = (1 - sigma) * x0 + sigma * noise; the model predicts the velocity noise - x0.
"""
from __future__ import annotations

import math

import torch


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Move sigmas towards the noisy end (shift > 1: composition) or the clean end (< 1: detail)."""
    if shift == 1.0:
        return sigmas
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def auto_shift(image_seq_len: int, base_len: int = 256, max_len: int = 4096,
               base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """A resolution-dependent shift: more tokens (bigger images) get more noise."""
    slope = (max_shift - base_shift) / (max_len - base_len)
    mu = base_shift + slope * (image_seq_len - base_len)
    return math.exp(mu)


def schedule_shift(latents: torch.Tensor, patch_area: int, *, shift: float, auto: bool) -> float:
    """The user's training shift (flow_schedule_shift), or with `auto` (flow_schedule_auto_shift) the
    resolution-dependent one for the tokens of one latent: its pixels over the denoiser's patch area."""
    if auto:
        return auto_shift(latents[0, 0].numel() // max(1, patch_area))
    return float(shift)


def sample_sigmas(batch: int, generator: torch.Generator, *, uniform: bool = False,
                  sigmoid_scale: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """Draw one training noise level per sample: logit-normal by default, or uniform; on the generator's device."""
    if uniform:
        sigmas = torch.rand(batch, generator=generator, device=generator.device)
    else:
        sigmas = torch.sigmoid(torch.randn(batch, generator=generator, device=generator.device) * sigmoid_scale)
    # Keep clear of exact 0/1, where the target is degenerate.
    return shift_sigmas(sigmas, shift).clamp(1e-4, 1 - 1e-4)


def noisy_latents(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Interpolate between data and noise at each sample's sigma."""
    s = sigmas.view(-1, *([1] * (latents.ndim - 1)))
    return (1 - s) * latents + s * noise


def target(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the model learns to predict."""
    return noise - latents


def loss(prediction: torch.Tensor, goal: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error against the target (the velocity, or a prior's prediction), computed in fp32;
    `weight` (broadcast to the latents) leaves out what the model is not asked to predict."""
    if weight is None:
        return torch.nn.functional.mse_loss(prediction.float(), goal.float())
    weight = weight.to(prediction.device, torch.float32).expand_as(prediction)
    return ((prediction.float() - goal.float()) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def condition_on_first_frame(noisy: torch.Tensor, first_frame: torch.Tensor, sigmas: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Image-to-video: the clip's first latent frame is given clean, as diffusers' Sana Video i2v pipeline
    samples. Returns the noisy latents with that frame restored, one sigma per latent frame (0 for the
    given one, so its timestep is 0) and the loss weight that leaves the given frame out."""
    frames = noisy.shape[2]
    noisy = torch.cat([first_frame.to(noisy.device, noisy.dtype), noisy[:, :, 1:]], dim=2)
    per_frame = sigmas.reshape(-1, 1).expand(-1, frames).clone()
    per_frame[:, 0] = 0.0
    weight = torch.ones(1, 1, frames, 1, 1, device=noisy.device)
    weight[:, :, 0] = 0.0
    return noisy, per_frame, weight
