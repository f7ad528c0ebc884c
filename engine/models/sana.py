"""Sana (NVLabs): SanaTransformer2DModel on AutoencoderDC latents, prompts through Gemma2 with the
"complex human instruction", sampled with SanaPipeline."""
from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from tuner.engine import flow
from tuner.engine.models.common import (
    free_memory, json_digest, model_sources, load_component, load_denoiser, load_frozen, model_dtype,
    save_pipeline_folder, source_fingerprint, tensor_to_pil, unwrap,
)

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

_IDENTITY_FILES = ("model_index.json", "tiny.json", "transformer/config.json", "vae/config.json",
                   "text_encoder/config.json", "tokenizer/tokenizer_config.json",
                   "scheduler/scheduler_config.json")
_COPIED_PARTS = ("text_encoder", "tokenizer", "scheduler")


def default_instruction() -> list[str]:
    """The complex human instruction SanaPipeline prepends to every prompt by default."""
    from diffusers import SanaPipeline

    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


class SanaFamily:
    """Loads, encodes for, trains and samples Sana through diffusers' own classes."""

    name: ClassVar[str] = "sana"

    @property
    def pipeline_class(self) -> type:
        from diffusers import SanaPipeline

        return SanaPipeline

    def __init__(self, cfg: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> None:
        from diffusers import AutoencoderDC, SanaTransformer2DModel

        self.cfg = cfg
        self.device = torch.device(device)
        self.weight_dtype = weight_dtype
        self.source, self.vae_source, self.vae_subfolder = model_sources(cfg)
        self.max_length = int(cfg.tokenizer_max_length or cfg.family.text_max_length)
        instruction = cfg.sana_complex_human_instruction
        self.instruction: list[str] = default_instruction() if instruction is None else list(instruction)
        if cfg.vae_dtype not in ("default", "fp32"):
            warnings.warn(f"vae_dtype {cfg.vae_dtype!r} is ignored for Sana: AutoencoderDC stays in fp32 "
                          "(it overflows in half precision)", stacklevel=2)

        # Only configs here: the data pipeline needs the alignment before any weights are loaded.
        self.vae_config = load_component(AutoencoderDC, self.vae_source, self.vae_subfolder,
                                         method="load_config")
        self.transformer_config = load_component(SanaTransformer2DModel, self.source, "transformer",
                                                 method="load_config")
        patch = int(self.transformer_config.get("patch_size", 1))
        vae_factor = 2 ** (len(self.vae_config["encoder_block_out_channels"]) - 1)
        self.pixel_alignment = vae_factor * patch
        self.patch_area = patch * patch
        self.latent_channels = int(self.vae_config["latent_channels"])
        self.scaling_factor = float(self.vae_config.get("scaling_factor", 1.0))

        self.tokenizer = None
        self.text_encoder = None
        self.vae = None
        self.scheduler_config = None
        self._empty: dict[str, torch.Tensor] | None = None
        # Swap in a cheaper latent decoder (e.g. a TAESD-style one for DC-AE) for preview frames.
        self.preview_decoder = None

    # --- loading ---------------------------------------------------------------------------------
    def load_text_encoders(self) -> None:
        """Load the Gemma tokenizer and the Gemma2 encoder (in weight_dtype, frozen, eval)."""
        if self.text_encoder is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = load_component(AutoTokenizer, self.source, "tokenizer")
        encoder = load_component(AutoModel, self.source, "text_encoder", dtype=self.weight_dtype)
        encoder.requires_grad_(False).eval()
        from tuner.engine.quantize import quantize_model

        self.text_encoder = quantize_model(encoder, self.cfg.text_encoder_1_precision, device=self.device,
                                           via=self.cfg.quantize_via, key="text_encoder_1_precision")
        # Caption dropout needs it after the encoder is unloaded, so it is made while loaded.
        self.empty_prompt()

    def unload_text_encoders(self) -> None:
        """Drop the text encoder and return its memory."""
        self.text_encoder = None
        free_memory(self.device)

    def load_vae(self) -> None:
        """Load AutoencoderDC in fp32 (its activations overflow in half precision)."""
        if self.vae is not None:
            return
        from diffusers import AutoencoderDC

        self.vae = load_frozen(AutoencoderDC, self.vae_source, self.vae_subfolder, torch.float32, self.device)

    def load_transformer(self, empty: bool = False) -> torch.nn.Module:
        """The denoiser in weight_dtype, in train mode, with gradient checkpointing as configured."""
        from diffusers import SanaTransformer2DModel

        return load_denoiser(SanaTransformer2DModel, self.source, self.weight_dtype, self.device, self.cfg, empty)

    def fingerprint(self) -> str:
        """Changes with the model's identity files or the prompt-encoding settings."""
        # The transformer's weights are left out: they change no cached latent or embedding.
        parts = [source_fingerprint(self.source, _IDENTITY_FILES, ("text_encoder", "tokenizer")),
                 source_fingerprint(self.vae_source, (str(Path(self.vae_subfolder or "") / "config.json"),),
                                    (self.vae_subfolder or ".",)),
                 json_digest({"max_length": self.max_length, "instruction": self.instruction,
                              "text_dtype": str(self.weight_dtype), "family": self.name,
                              # a quantised text encoder gives (slightly) different embeddings
                              "text_precision": self.cfg.text_encoder_1_precision})]
        return json_digest(parts)[:16]

    # --- encoding --------------------------------------------------------------------------------
    def _text_pipeline(self):
        from diffusers import SanaPipeline

        self.load_text_encoders()
        return SanaPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=None,
                            transformer=None, scheduler=None)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        """Gemma2 embeddings as SanaPipeline makes them: instruction prepended, then cut to max length.

        An empty prompt gets the pipeline's unconditional embedding (no instruction), so empty
        captions, dropped captions and the default negative prompt are one and the same.
        """
        pipe = self._text_pipeline()
        results: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            embeds, mask, _, _ = pipe.encode_prompt(
                chunk, do_classifier_free_guidance=False, device=self.device,
                max_sequence_length=self.max_length, complex_human_instruction=self.instruction)
            for i, prompt in enumerate(chunk):
                if not prompt.strip():
                    results.append(self.empty_prompt())
                else:
                    results.append({"prompt_embeds": embeds[i].cpu(), "prompt_attention_mask": mask[i].cpu()})
        return results

    @torch.no_grad()
    def empty_prompt(self) -> dict[str, torch.Tensor]:
        """The embedding of "" as SanaPipeline encodes its negative prompt (no instruction)."""
        if self._empty is None:
            pipe = self._text_pipeline()
            embeds, mask = pipe._get_gemma_prompt_embeds(
                [""], device=self.device, dtype=self.text_encoder.dtype,
                max_sequence_length=self.max_length, complex_human_instruction=None)
            self._empty = {"prompt_embeds": embeds[0].cpu(), "prompt_attention_mask": mask[0].cpu()}
        return {key: value.clone() for key, value in self._empty.items()}

    def collate_text(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack per-prompt embeddings into (B, L, D) and (B, L)."""
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] → scaled DC-AE latents (B, C, H/f, W/f), fp32 on the CPU."""
        self.load_vae()
        latents = self.vae.encode(pixels.to(self.device, torch.float32)).latent
        return (latents * self.scaling_factor).float().cpu()

    # --- training --------------------------------------------------------------------------------
    def training_shift(self, latents: torch.Tensor) -> float:
        """flow_schedule_shift, or the auto shift for this many tokens (flow_schedule_auto_shift)."""
        return flow.schedule_shift(latents, self.patch_area, shift=self.cfg.flow_schedule_shift,
                                   auto=self.cfg.flow_schedule_auto_shift)

    def predict(self, model: torch.nn.Module, noisy_latents: torch.Tensor, sigmas: torch.Tensor,
                text: dict[str, torch.Tensor]) -> torch.Tensor:
        """The flow prediction; timesteps are sigma × 1000 × timestep_scale, as SanaPipeline passes them."""
        dtype = model_dtype(unwrap(model))
        device = noisy_latents.device
        scale = float(self.transformer_config.get("timestep_scale", 1.0))
        timestep = sigmas.reshape(-1).to(device, torch.float32) * 1000.0 * scale
        return model(
            noisy_latents.to(dtype),
            encoder_hidden_states=text["prompt_embeds"].to(device, dtype),
            encoder_attention_mask=text["prompt_attention_mask"].to(device),
            timestep=timestep,
            return_dict=False,
        )[0]

    # --- validation and export --------------------------------------------------------------------
    def _scheduler(self):
        """A fresh instance of the base model's own inference scheduler (it keeps per-run state)."""
        import diffusers

        if self.scheduler_config is None:
            self.scheduler_config = load_component(diffusers.DPMSolverMultistepScheduler, self.source,
                                                   "scheduler", method="load_config")
        cls = getattr(diffusers, self.scheduler_config.get("_class_name", ""), diffusers.DPMSolverMultistepScheduler)
        return cls.from_config(self.scheduler_config)

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, text: dict[str, torch.Tensor], negative_text: dict[str, torch.Tensor],
                 width: int, height: int, steps: int, guidance: float, seed: int, on_step=None) -> list:
        """Sample with SanaPipeline around `model` from cached embeddings (no text encoder needed)."""
        from diffusers import SanaPipeline

        self.load_vae()
        transformer = unwrap(model)
        was_training = transformer.training
        pipe = SanaPipeline(tokenizer=None, text_encoder=None, vae=self.vae, transformer=transformer,
                            scheduler=self._scheduler())
        pipe.set_progress_bar_config(disable=True)

        return self._sample(pipe, transformer, was_training, text, negative_text, steps, on_step, seed,
                            width=width, height=height, guidance_scale=guidance).images

    def _sample(self, pipe, transformer: torch.nn.Module, was_training: bool, text: dict[str, torch.Tensor],
                negative_text: dict[str, torch.Tensor], steps: int, on_step, seed: int, **kwargs: Any):
        """Run `pipe` from cached embeddings in eval mode (train mode restored after), reporting each step."""
        def step_end(_pipe, index, _timestep, tensors):
            on_step(index + 1, steps, tensors["latents"])
            return {}

        def batched(d: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            embeds, mask = d["prompt_embeds"], d["prompt_attention_mask"]
            return {"prompt_embeds": (embeds if embeds.dim() == 3 else embeds[None]).to(self.device),
                    "prompt_attention_mask": (mask if mask.dim() == 2 else mask[None]).to(self.device)}

        cond, uncond = batched(text), batched(negative_text)
        transformer.eval()
        try:
            return pipe(
                prompt_embeds=cond["prompt_embeds"], prompt_attention_mask=cond["prompt_attention_mask"],
                negative_prompt=None, negative_prompt_embeds=uncond["prompt_embeds"],
                negative_prompt_attention_mask=uncond["prompt_attention_mask"], num_inference_steps=steps,
                generator=torch.Generator("cpu").manual_seed(seed), use_resolution_binning=False,
                max_sequence_length=self.max_length, output_type="pil",
                callback_on_step_end=step_end if on_step else None, **kwargs,
            )
        finally:
            transformer.train(was_training)

    @torch.no_grad()
    def decode_preview(self, latents: torch.Tensor):
        """An image of in-progress latents: `preview_decoder` when set, else the full DC-AE decode.

        The full decode is cheap for the tiny model; for 1024 px models a TAESD-style decoder set
        as `preview_decoder` (latents / scaling_factor → pixels in [-1, 1]) would be faster.
        """
        latents = latents[:1].float() / self.scaling_factor
        if self.preview_decoder is not None:
            pixels = self.preview_decoder(latents)
        else:
            self.load_vae()
            pixels = self.vae.decode(latents.to(self.device)).sample
        return tensor_to_pil(pixels)[0]

    def save_pipeline(self, model: torch.nn.Module, folder: Path) -> None:
        """A SanaPipeline folder: the trained transformer, the VAE in use, the rest linked from the base."""
        self.load_vae()
        save_pipeline_folder(Path(folder), self.source, _COPIED_PARTS, self.vae, model)
