"""The one small protocol every model family implements; the training loop knows nothing else.

A family loads its components (hub id or local diffusers folder), turns prompts into cacheable
text embeddings, pixels into normalised latents, makes a prediction for the flow-matching
objective, and builds the validation pipeline. Families live in sana.py, sd3.py, sanavideo.py.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from tuner.engine.config import TrainConfig

# Called by the validation sampler after inference step `k` of `n` with the current latents.
StepCallback = Callable[[int, int, "torch.Tensor"], None]


class ModelFamily(Protocol):
    """What the engine needs from a model family. Tensors returned for caching live on the CPU."""

    name: ClassVar[str]            # the `model_family` value: "sana", "sd3", "sanavideo"
    device: torch.device           # where the family's modules run (the accelerator's device)
    weight_dtype: torch.dtype      # the dtype the denoiser trains in
    pixel_alignment: int           # image sides must be multiples of this (VAE factor × patch)
    patch_area: int                # latent pixels per transformer token (the auto shift counts tokens)
    latent_channels: int

    @property
    def pipeline_class(self) -> type:
        """The diffusers pipeline class of this family (SanaPipeline, ...): export and LoRA loading use it."""

    # --- loading -------------------------------------------------------------------------
    def __init__(self, cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> None: ...
    def load_text_encoders(self) -> None: ...
    def unload_text_encoders(self) -> None:
        """Free the text encoders once every prompt is cached (they are reloaded for validation of new prompts)."""
    def load_vae(self) -> None: ...
    def load_transformer(self, empty: bool = False) -> torch.nn.Module:
        """Load the denoiser in the training dtype; it is the module the loop trains (`empty`: weights on
        the meta device, nothing read: load_denoiser)."""
    def fingerprint(self) -> str:
        """A short string that changes when the weights or the encoding settings change (cache keys)."""

    # --- encoding (cached) -----------------------------------------------------------------
    def encode_prompts(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """One dict of CPU tensors per prompt, without a batch dimension, ready to save."""
    def empty_prompt(self) -> dict[str, torch.Tensor]:
        """The unconditional embedding used for caption dropout (same layout as encode_prompts)."""
    def collate_text(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack cached prompt embeddings into a batch."""
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] → latents already scaled/shifted for training, on the CPU."""

    # --- training ------------------------------------------------------------------------
    def training_shift(self, latents: torch.Tensor) -> float:
        """The flow shift for a batch of training latents: the user's schedule, or the checkpoint's own."""
    def predict(self, model: torch.nn.Module, noisy_latents: torch.Tensor, sigmas: torch.Tensor,
                text: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's output for noisy latents at noise levels `sigmas` (B,) in [0, 1]."""

    # --- validation and export -------------------------------------------------------------
    def generate(self, model: torch.nn.Module, text: dict[str, torch.Tensor],
                 negative_text: dict[str, torch.Tensor], width: int, height: int, steps: int,
                 guidance: float, seed: int, on_step: StepCallback | None = None) -> list[Image.Image]:
        """Sample with the family's pipeline around `model` (the trained or EMA weights).

        `text` / `negative_text` come from encode_prompts (cached before the text encoders were
        unloaded), so validation never needs the text encoders resident.
        """
    def decode_preview(self, latents: torch.Tensor) -> Image.Image:
        """A cheap decode of in-progress sampling latents for a preview frame."""
    def save_pipeline(self, model: torch.nn.Module, folder: Path) -> None:
        """Write a diffusers-format pipeline folder with the trained weights."""


class VideoFamily(ModelFamily, Protocol):
    """A family whose samples are clips: what video validation and CREPA need on top."""

    num_frames: int                # frames per validation clip
    framerate: int                 # frames per second of written validation videos

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Training latents (B, C, f, h, w) → pixels (B, 3, F, H, W) in [-1, 1]."""


def family_class(name: str) -> type[Any]:
    """The class that implements `model_family: name`, as its family card names it."""
    from tuner.engine import families

    return families.card(name).engine_class()
