"""Stable Diffusion 3 / 3.5: SD3Transformer2DModel (MMDiT) on AutoencoderKL latents, prompts through two CLIPs
and T5 (sd3_text.py), sampled with StableDiffusion3Pipeline, optionally with skip-layer guidance."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from tuner.engine import flow
from tuner.engine.models.common import (
    free_memory, json_digest, model_sources, load_component, load_denoiser, load_frozen, model_dtype,
    save_pipeline_folder, source_fingerprint, tensor_to_pil, unwrap,
)
from tuner.engine.models.sd3_text import SD3PromptEncoder, load_text_components, text_precisions

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

_TEXT_PARTS = ("text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3")
_IDENTITY_FILES = ("model_index.json", "tiny.json", "transformer/config.json", "vae/config.json",
                   "scheduler/scheduler_config.json") + tuple(
    f"{part}/{'tokenizer_config.json' if part.startswith('tokenizer') else 'config.json'}" for part in _TEXT_PARTS)
_COPIED_PARTS = _TEXT_PARTS + ("scheduler",)


class SD3Family:
    """Loads, encodes for, trains and samples SD3 / 3.5 through diffusers' own classes."""

    name: ClassVar[str] = "sd3"

    @property
    def pipeline_class(self) -> type:
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    def __init__(self, cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> None:
        from diffusers import AutoencoderKL, SD3Transformer2DModel

        self.cfg = cfg
        self.device = torch.device(device)
        self.weight_dtype = weight_dtype
        self.source, self.vae_source, self.vae_subfolder = model_sources(cfg)
        self.max_length = int(cfg.tokenizer_max_length or cfg.family.text_max_length)
        self.text_settings = {"t5_padding": cfg.t5_padding, "clip_uncond": cfg.sd3_clip_uncond_behaviour,
                              "t5_uncond": cfg.sd3_t5_uncond_behaviour}
        if cfg.vae_dtype not in ("default", "fp32"):
            warnings.warn(f"vae_dtype {cfg.vae_dtype!r} is ignored for SD3: the VAE stays in fp32 "
                          "(its latents are cached once, so half precision saves little)", stacklevel=2)

        # Only configs here: the data pipeline needs the alignment before any weights are loaded.
        self.vae_config = load_component(AutoencoderKL, self.vae_source, self.vae_subfolder, method="load_config")
        self.transformer_config = load_component(SD3Transformer2DModel, self.source, "transformer",
                                                 method="load_config")
        patch = int(self.transformer_config.get("patch_size", 2))
        vae_factor = 2 ** (len(self.vae_config["block_out_channels"]) - 1)
        self.pixel_alignment = vae_factor * patch
        self.patch_area = patch * patch
        self.latent_channels = int(self.vae_config["latent_channels"])
        self.scaling_factor = float(self.vae_config.get("scaling_factor") or 1.0)
        self.shift_factor = float(self.vae_config.get("shift_factor") or 0.0)
        self.skip_layers = self._skip_layers(cfg.validation_guidance_skip_layers)

        self.text_parts: dict[str, Any] | None = None
        self.vae = None
        self.scheduler_config = None
        self._empty: dict[str, torch.Tensor] | None = None
        # Swap in a cheaper latent decoder (e.g. TAESD3) for preview frames.
        self.preview_decoder = None

    def _skip_layers(self, layers: list[int] | None) -> list[int] | None:
        """The skip-layer-guidance blocks, warning about any the transformer does not have."""
        if not layers:
            return None
        count = int(self.transformer_config.get("num_layers", 0))
        missing = [layer for layer in layers if not 0 <= int(layer) < count]
        if missing:
            warnings.warn(f"validation_guidance_skip_layers {list(layers)}: the transformer has blocks 0-{count - 1}, "
                          f"so {missing} skip nothing; pick blocks in that range (SD3.5: [7, 8, 9])", stacklevel=3)
        return [int(layer) for layer in layers]

    # --- loading ---------------------------------------------------------------------------------
    def load_text_encoders(self) -> None:
        """Load both CLIPs and T5 with their tokenizers (weight_dtype, frozen, eval)."""
        if self.text_parts is not None:
            return
        self.text_parts = load_text_components(self.source, self.weight_dtype, self.device, self.cfg)
        # Caption dropout needs it after the encoders are unloaded, so it is made while loaded.
        self.empty_prompt()

    def unload_text_encoders(self) -> None:
        """Drop the text encoders and return their memory."""
        self.text_parts = None
        free_memory(self.device)

    def load_vae(self) -> None:
        """Load AutoencoderKL in fp32."""
        if self.vae is not None:
            return
        from diffusers import AutoencoderKL

        self.vae = load_frozen(AutoencoderKL, self.vae_source, self.vae_subfolder, torch.float32, self.device)

    def load_transformer(self, empty: bool = False) -> torch.nn.Module:
        """The MMDiT in weight_dtype, in train mode, with gradient checkpointing as configured."""
        from diffusers import SD3Transformer2DModel

        return load_denoiser(SD3Transformer2DModel, self.source, self.weight_dtype, self.device, self.cfg, empty)

    def fingerprint(self) -> str:
        """Changes with the model's identity files or the prompt-encoding settings."""
        # The transformer's weights are left out: they change no cached latent or embedding.
        parts = [source_fingerprint(self.source, _IDENTITY_FILES, _TEXT_PARTS),
                 source_fingerprint(self.vae_source, (str(Path(self.vae_subfolder or "") / "config.json"),),
                                    (self.vae_subfolder or ".",)),
                 json_digest({"max_length": self.max_length, **self.text_settings,
                              "text_dtype": str(self.weight_dtype), "family": self.name,
                              # quantised text encoders give (slightly) different embeddings
                              "text_precision": list(text_precisions(self.cfg))})]
        return json_digest(parts)[:16]

    # --- encoding --------------------------------------------------------------------------------
    def _encoder(self) -> SD3PromptEncoder:
        self.load_text_encoders()
        return SD3PromptEncoder(self.text_parts, self.device, self.max_length, **self.text_settings)

    def encode_prompts(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Joint CLIP+T5 sequence (77 + max_length, T5 width) and pooled CLIP vectors, per prompt.

        A blank prompt gets the unconditional embedding (sd3_*_uncond_behaviour), so empty captions,
        dropped captions and the default negative prompt are one and the same.
        """
        return self._encoder().encode(prompts)

    def empty_prompt(self) -> dict[str, torch.Tensor]:
        """The unconditional embedding: "" encoded, with CLIP and/or T5 parts zeroed as configured."""
        if self._empty is None:
            self._empty = self._encoder().unconditional()
        return {key: value.clone() for key, value in self._empty.items()}

    def collate_text(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack per-prompt embeddings into (B, L, D) and (B, P)."""
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → (mean latents − shift_factor) × scaling_factor, fp32 on the CPU."""
        self.load_vae()
        # The posterior mean, not a sample: a cached latent must not depend on the batch it was encoded in.
        latents = self.vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mode()
        return ((latents - self.shift_factor) * self.scaling_factor).float().cpu()

    # --- training --------------------------------------------------------------------------------
    def training_shift(self, latents: torch.Tensor) -> float:
        """flow_schedule_shift, or the auto shift for this many 2×2-patch tokens (flow_schedule_auto_shift)."""
        return flow.schedule_shift(latents, self.patch_area, shift=self.cfg.flow_schedule_shift,
                                   auto=self.cfg.flow_schedule_auto_shift)

    def predict(self, model: torch.nn.Module, noisy_latents: torch.Tensor, sigmas: torch.Tensor,
                text: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flow prediction; timesteps are sigma × 1000, as FlowMatchEulerDiscreteScheduler gives them."""
        dtype = model_dtype(unwrap(model))
        device = noisy_latents.device
        return model(
            hidden_states=noisy_latents.to(dtype),
            encoder_hidden_states=text["prompt_embeds"].to(device, dtype),
            pooled_projections=text["pooled_prompt_embeds"].to(device, dtype),
            timestep=sigmas.reshape(-1).to(device, torch.float32) * 1000.0,
            return_dict=False,
        )[0]

    # --- validation and export --------------------------------------------------------------------
    def _scheduler(self):
        """A fresh instance of the base model's own scheduler (it keeps per-run state)."""
        import diffusers

        if self.scheduler_config is None:
            self.scheduler_config = load_component(diffusers.FlowMatchEulerDiscreteScheduler, self.source,
                                                   "scheduler", method="load_config")
        default = diffusers.FlowMatchEulerDiscreteScheduler
        cls = getattr(diffusers, self.scheduler_config.get("_class_name", ""), default)
        return cls.from_config(self.scheduler_config)

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, text: dict[str, torch.Tensor], negative_text: dict[str, torch.Tensor],
                 width: int, height: int, steps: int, guidance: float, seed: int, on_step=None) -> list:
        """Sample with StableDiffusion3Pipeline around `model` from cached embeddings (no text encoders)."""
        from diffusers import StableDiffusion3Pipeline

        self.load_vae()
        transformer = unwrap(model)
        was_training = transformer.training
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=self._scheduler(), vae=self.vae, text_encoder=None, tokenizer=None,
            text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None)
        pipe.set_progress_bar_config(disable=True)

        def step_end(_pipe, index, _timestep, tensors):
            on_step(index + 1, steps, tensors["latents"])
            return {}

        def batched(d: dict[str, torch.Tensor], key: str, dims: int) -> torch.Tensor:
            value = d[key]
            return (value if value.dim() == dims else value[None]).to(self.device, model_dtype(transformer))

        cfg = self.cfg
        transformer.eval()
        try:
            out = pipe(
                prompt_embeds=batched(text, "prompt_embeds", 3),
                pooled_prompt_embeds=batched(text, "pooled_prompt_embeds", 2),
                negative_prompt_embeds=batched(negative_text, "prompt_embeds", 3),
                negative_pooled_prompt_embeds=batched(negative_text, "pooled_prompt_embeds", 2),
                width=width, height=height, num_inference_steps=steps, guidance_scale=guidance,
                generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                skip_guidance_layers=self.skip_layers,
                skip_layer_guidance_scale=float(cfg.validation_guidance_skip_scale),
                skip_layer_guidance_start=float(cfg.validation_guidance_skip_layers_start),
                skip_layer_guidance_stop=float(cfg.validation_guidance_skip_layers_stop),
                callback_on_step_end=step_end if on_step else None,
            )
        finally:
            transformer.train(was_training)
        # Decoded here in fp32: the pipeline would feed bf16 latents to the fp32 VAE.
        return tensor_to_pil(self._decode(out.images))

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Training-space latents → pixels in [-1, 1] through the full VAE."""
        self.load_vae()
        latents = latents.to(self.device, torch.float32) / self.scaling_factor + self.shift_factor
        return self.vae.decode(latents).sample

    @torch.no_grad()
    def decode_preview(self, latents: torch.Tensor):
        """An image of in-progress latents: `preview_decoder` when set, else the full VAE decode."""
        if self.preview_decoder is not None:
            pixels = self.preview_decoder(latents[:1].float() / self.scaling_factor + self.shift_factor)
        else:
            pixels = self._decode(latents[:1])
        return tensor_to_pil(pixels)[0]

    def save_pipeline(self, model: torch.nn.Module, folder: Path) -> None:
        """A StableDiffusion3Pipeline folder: the trained transformer, the VAE in use, the rest linked from the base."""
        self.load_vae()
        save_pipeline_folder(Path(folder), self.source, _COPIED_PARTS, self.vae, model)
