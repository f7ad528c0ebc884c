"""Sana Video 2B: SanaVideoTransformer3DModel on normalised AutoencoderKLWan latents, prompts
through Gemma2 with the video pipeline's own instruction, sampled with SanaVideoPipeline.

The text side (Gemma2, tokenizer, cached embeddings, caption dropout) and the export are Sana's
exactly — SanaVideoPipeline.encode_prompt is SanaPipeline's with another default instruction —
so this family extends SanaFamily and replaces the VAE, the denoiser call and sampling.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, ClassVar

import torch

from tuner.engine import offload
from tuner.engine.models.common import (
    json_digest, model_sources, load_component, load_denoiser, load_frozen, model_dtype, parse_dtype,
    tensor_to_pil, unwrap,
)
from tuner.engine.models.sana import SanaFamily

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

DEFAULT_FRAMES = 81
DEFAULT_FRAMERATE = 16
PIPELINE_ALIGNMENT = 32  # SanaVideoPipeline refuses other sizes; validation sizes are rounded down to it


def default_video_instruction() -> list[str]:
    """The complex human instruction SanaVideoPipeline prepends to every prompt by default."""
    from diffusers import SanaVideoPipeline

    return list(inspect.signature(SanaVideoPipeline.__call__).parameters["complex_human_instruction"].default)


def scheduler_shift(config: dict) -> float:
    """The flow shift a checkpoint's scheduler config defines (flow_shift or shift), else 1 (no shift)."""
    for key in ("flow_shift", "shift"):
        value = config.get(key)
        if value is not None and (key == "shift" or config.get("use_flow_sigmas", True)):
            return float(value)
    return 1.0


class SanaVideoFamily(SanaFamily):
    """Loads, encodes for, trains and samples Sana Video through diffusers' own classes."""

    name: ClassVar[str] = "sanavideo"

    @property
    def pipeline_class(self) -> type:
        from diffusers import SanaVideoPipeline

        return SanaVideoPipeline

    def __init__(self, cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> None:
        from diffusers import AutoencoderKLWan, DPMSolverMultistepScheduler, SanaVideoTransformer3DModel

        self.cfg = cfg
        self.device = torch.device(device)
        self.weight_dtype = weight_dtype
        self.source, self.vae_source, self.vae_subfolder = model_sources(cfg)
        self.max_length = int(cfg.tokenizer_max_length or cfg.family.text_max_length)
        instruction = cfg.sana_complex_human_instruction
        self.instruction = default_video_instruction() if instruction is None else list(instruction)
        # Wan's VAE is stable in bf16, but fp32 keeps cached latents independent of the run's precision.
        self.vae_dtype = parse_dtype(cfg.vae_dtype, torch.float32)

        self.vae_config = load_component(AutoencoderKLWan, self.vae_source, self.vae_subfolder, method="load_config")
        self.transformer_config = load_component(SanaVideoTransformer3DModel, self.source, "transformer",
                                                 method="load_config")
        spatial = int(self.vae_config.get("scale_factor_spatial") or 2 ** (len(self.vae_config["dim_mult"]) - 1))
        temporal = int(self.vae_config.get("scale_factor_temporal")
                       or 2 ** sum(bool(t) for t in self.vae_config["temperal_downsample"]))
        p_t, p_h, p_w = self.transformer_config.get("patch_size", (1, 2, 2))
        self.spatial_compression, self.temporal_compression = spatial, temporal
        self.pixel_alignment = spatial * max(p_h, p_w)
        self.patch_area = p_h * p_w
        self.latent_channels = int(self.vae_config["z_dim"])
        mean, std = self.vae_config.get("latents_mean"), self.vae_config.get("latents_std")
        self.latents_mean = torch.tensor(mean if mean else [0.0] * self.latent_channels).view(1, -1, 1, 1, 1)
        self.latents_std = torch.tensor(std if std else [1.0] * self.latent_channels).view(1, -1, 1, 1, 1)

        self.scheduler_config = load_component(DPMSolverMultistepScheduler, self.source, "scheduler",
                                               method="load_config")
        # Trained on the checkpoint's own schedule (the card's fixed_schedule): flow_schedule_* are ignored.
        self.checkpoint_shift = scheduler_shift(self.scheduler_config)
        self.num_frames = int(cfg.validation_num_video_frames or DEFAULT_FRAMES)
        self.framerate = int(cfg.framerate or DEFAULT_FRAMERATE)

        self.tokenizer = None
        self.text_encoder = None
        self.vae = None
        self._empty: dict[str, torch.Tensor] | None = None
        self.preview_decoder = None

    # --- loading ---------------------------------------------------------------------------------
    def load_text_encoders(self) -> None:
        """Gemma2 as for Sana; with group offload on, its layers wait in RAM between uses (inference only)."""
        fresh = self.text_encoder is None
        super().load_text_encoders()
        if fresh and self.cfg.enable_group_offload:
            offload.apply(self.text_encoder, self.cfg, self.device, name="text_encoder")

    def load_vae(self) -> None:
        """AutoencoderKLWan in vae_dtype (fp32 by default), frozen."""
        if self.vae is not None:
            return
        from diffusers import AutoencoderKLWan

        self.vae = load_frozen(AutoencoderKLWan, self.vae_source, self.vae_subfolder, self.vae_dtype, self.device)

    def load_transformer(self, empty: bool = False) -> torch.nn.Module:
        """The denoiser in weight_dtype, train mode, with checkpointing as configured.

        Never under group offload, which cannot train (offload.py); `tuner check` says so."""
        from diffusers import SanaVideoTransformer3DModel

        return load_denoiser(SanaVideoTransformer3DModel, self.source, self.weight_dtype, self.device, self.cfg, empty)

    def fingerprint(self) -> str:
        """Sana's fingerprint plus the VAE dtype, which changes the cached latents."""
        return json_digest([super().fingerprint(), str(self.vae_dtype)])[:16]

    def _text_pipeline(self):
        from diffusers import SanaVideoPipeline

        self.load_text_encoders()
        return SanaVideoPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=None,
                                 transformer=None, scheduler=None)

    # --- latents ---------------------------------------------------------------------------------
    def _normalise(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.latents_mean.to(latents)) / self.latents_std.to(latents)

    def _denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latents_std.to(latents) + self.latents_mean.to(latents)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] (an image batch counts as F = 1) → normalised latents on the CPU.

        The posterior's mean is used, not a sample, so a cached latent is the same on every run.
        """
        self.load_vae()
        if pixels.dim() == 4:
            pixels = pixels.unsqueeze(2)
        posterior = self.vae.encode(pixels.to(self.device, self.vae_dtype)).latent_dist
        return self._normalise(posterior.mode().float()).cpu()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, f, h, w) → pixels (B, 3, F, H, W) in [-1, 1]."""
        self.load_vae()
        latents = self._denormalise(latents.float()).to(self.device, self.vae_dtype)
        return self.vae.decode(latents).sample.float().clamp(-1, 1)

    # --- training --------------------------------------------------------------------------------
    def training_shift(self, latents: torch.Tensor) -> float:
        """The checkpoint scheduler's own shift, whatever the latents' size."""
        return self.checkpoint_shift

    def predict(self, model: torch.nn.Module, noisy_latents: torch.Tensor, sigmas: torch.Tensor,
                text: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flow prediction for (B, C, f, h, w) latents; timesteps are sigma × 1000 as the pipeline passes them.

        `sigmas` is (B,), or (B, f) with one sigma per latent frame (image-to-video): then each token gets
        its frame's timestep, the (B, 1, f, h, w) per-patch layout diffusers' i2v pipeline passes."""
        dtype = model_dtype(unwrap(model))
        device = noisy_latents.device
        timestep = sigmas.to(device, torch.float32) * 1000.0
        if timestep.dim() == 2:
            p_t, p_h, p_w = unwrap(model).config.patch_size
            b, _, f, h, w = noisy_latents.shape
            timestep = timestep[:, None, ::p_t, None, None].expand(b, 1, f // p_t, h // p_h, w // p_w)
        else:
            timestep = timestep.reshape(-1)
        return model(
            noisy_latents.to(dtype),
            encoder_hidden_states=text["prompt_embeds"].to(device, dtype),
            encoder_attention_mask=text["prompt_attention_mask"].to(device),
            timestep=timestep,
            return_dict=False,
        )[0]

    # --- validation ------------------------------------------------------------------------------
    def _scheduler(self):
        import diffusers

        cls = getattr(diffusers, self.scheduler_config.get("_class_name", ""), diffusers.DPMSolverMultistepScheduler)
        return cls.from_config(self.scheduler_config)

    def valid_frames(self, frames: int) -> int:
        """The nearest frame count at or below `frames` that the VAE decodes (4k+1 for Wan)."""
        t = self.temporal_compression
        return max(1, (frames - 1) // t * t + 1)

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, text: dict[str, torch.Tensor], negative_text: dict[str, torch.Tensor],
                 width: int, height: int, steps: int, guidance: float, seed: int, on_step=None,
                 frames: int | None = None) -> list:
        """One video as a list of PIL frames: validation_num_video_frames (4k+1) at width × height."""
        from diffusers import SanaVideoPipeline

        self.load_vae()
        transformer = unwrap(model)
        was_training = transformer.training
        pipe = SanaVideoPipeline(tokenizer=None, text_encoder=None, vae=self.vae, transformer=transformer,
                                 scheduler=self._scheduler())
        pipe.set_progress_bar_config(disable=True)
        frames = self.valid_frames(frames or self.num_frames)
        align = PIPELINE_ALIGNMENT
        width, height = max(align, width // align * align), max(align, height // align * align)

        out = self._sample(pipe, transformer, was_training, text, negative_text, steps, on_step, seed,
                           width=width, height=height, frames=frames, guidance_scale=guidance)
        return list(out.frames[0])

    @torch.no_grad()
    def decode_preview(self, latents: torch.Tensor):
        """The middle frame of in-progress latents, decoded alone.

        Wan's VAE is causal: one latent frame decoded on its own comes out as a single image, so
        the preview costs one frame's decode instead of the whole clip's (an approximation of
        that frame in the finished video, which is what a preview needs).
        """
        latents = latents[:1].float()
        if latents.dim() == 5:
            middle = latents.shape[2] // 2
            latents = latents[:, :, middle:middle + 1]
        if self.preview_decoder is not None:
            pixels = self.preview_decoder(self._denormalise(latents))
        else:
            pixels = self.decode_latents(latents)[:, :, 0]
        return tensor_to_pil(pixels)[0]
