"""SD3 prompt encoding: two CLIPs and T5 joined as StableDiffusion3Pipeline joins them, plus SimpleTuner's
T5-padding and unconditional-embedding options."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from tuner.engine.models.common import load_component

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

DEFAULT_T5_LENGTH = 154
_TOKENIZERS = ("tokenizer", "tokenizer_2", "tokenizer_3")
_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def text_precisions(cfg: TrainConfig) -> tuple[str, str, str]:
    """text_encoder_{1,2,3}_precision: CLIP-L, CLIP-G and T5, in the pipeline's order."""
    return cfg.text_encoder_1_precision, cfg.text_encoder_2_precision, cfg.text_encoder_3_precision


def load_text_components(source: str, dtype: torch.dtype, device: torch.device,
                         cfg: TrainConfig | None = None) -> dict[str, Any]:
    """The three tokenizers and the three frozen text encoders (eval, on `device`, quantised as
    `text_encoder_{1,2,3}_precision` say), keyed as the pipeline names them."""
    from transformers import AutoTokenizer, CLIPTextModelWithProjection, T5EncoderModel

    from tuner.engine.quantize import quantize_model

    parts: dict[str, Any] = {name: load_component(AutoTokenizer, source, name) for name in _TOKENIZERS}
    classes = (CLIPTextModelWithProjection, CLIPTextModelWithProjection, T5EncoderModel)
    precisions = text_precisions(cfg) if cfg is not None else ("no_change",) * 3
    for index, (name, cls, precision) in enumerate(zip(_ENCODERS, classes, precisions), start=1):
        encoder = load_component(cls, source, name, dtype=dtype).requires_grad_(False).eval()
        if cfg is not None:
            encoder = quantize_model(encoder, precision, device=device, via=cfg.quantize_via,
                                     key=f"text_encoder_{index}_precision")
        parts[name] = encoder.to(device)
    return parts


class SD3PromptEncoder:
    """Turns prompts into {"prompt_embeds": (77 + T5 length, D), "pooled_prompt_embeds": (P,)} on the CPU."""

    def __init__(self, parts: dict[str, Any], device: torch.device, max_length: int = DEFAULT_T5_LENGTH,
                 t5_padding: str = "unmodified", clip_uncond: str = "empty_string", t5_uncond: str = "empty_string"):
        from diffusers import StableDiffusion3Pipeline

        # The pipeline's own encode_prompt does the joining; it needs no transformer, VAE or scheduler.
        self.pipe = StableDiffusion3Pipeline(transformer=None, scheduler=None, vae=None, **parts)
        self.device = torch.device(device)
        self.max_length = int(max_length)
        self.t5_padding = t5_padding
        self.clip_uncond = clip_uncond
        self.t5_uncond = t5_uncond

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Embeddings as StableDiffusion3Pipeline.encode_prompt makes them; blank prompts get `unconditional()`."""
        if not prompts:
            return []
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompts, None, None, device=self.device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_length)
        if self.t5_padding == "zero":
            tokens = self.pipe.tokenizer_3(prompts, padding="max_length", max_length=self.max_length,
                                           truncation=True, add_special_tokens=True, return_tensors="pt")
            mask = tokens.attention_mask.to(embeds.device, embeds.dtype)
            clip_length = embeds.shape[1] - self.max_length
            embeds = torch.cat([embeds[:, :clip_length], embeds[:, clip_length:] * mask[..., None]], dim=1)
        results = [{"prompt_embeds": e.cpu(), "pooled_prompt_embeds": p.cpu()} for e, p in zip(embeds, pooled)]
        return [self._unconditional(r) if not prompt.strip() else r for prompt, r in zip(prompts, results)]

    def unconditional(self) -> dict[str, torch.Tensor]:
        """The embedding for a dropped caption or an empty negative prompt, as the uncond behaviours say."""
        return self.encode([""])[0]

    def _unconditional(self, encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`encoded` (of a blank prompt) with its CLIP and/or T5 parts zeroed when their behaviour is "zero"."""
        embeds, pooled = encoded["prompt_embeds"].clone(), encoded["pooled_prompt_embeds"].clone()
        clip_length = embeds.shape[0] - self.max_length
        if self.clip_uncond == "zero":
            embeds[:clip_length] = 0
            pooled.zero_()
        if self.t5_uncond == "zero":
            embeds[clip_length:] = 0
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
