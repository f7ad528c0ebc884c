"""The tiny Sana Video: Gemma2, a Wan VAE (8x space, 4x time), a small 3D transformer."""
from __future__ import annotations

from pathlib import Path

from tuner.engine.tiny.common import _save_atomically, is_complete
from tuner.engine.tiny.sana import GEMMA_HIDDEN, tiny_gemma
from tuner.engine.tiny.tokenizers import tiny_tokenizer

# Sana Video: Wan VAE 8× in space and 4× in time (5 frames at 64×64 → latents (16, 2, 8, 8)).
SANAVIDEO_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                     temperal_downsample=[False, True, True])
SANAVIDEO_TRANSFORMER = dict(in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=12,
                             num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=12,
                             cross_attention_dim=24, caption_channels=GEMMA_HIDDEN, mlp_ratio=2.5, sample_size=8,
                             patch_size=(1, 2, 2), qk_norm="rms_norm_across_heads", rope_max_seq_len=32)


def build_tiny_sanavideo(out: Path, seed: int = 0) -> Path:
    """Write the tiny Sana Video to `out` (skipped when a complete one for this seed is there) and return `out`."""
    out = Path(out)
    if is_complete(out, seed, "sanavideo"):
        return out

    import torch
    from diffusers import (AutoencoderKLWan, DPMSolverMultistepScheduler, SanaVideoPipeline,
                           SanaVideoTransformer3DModel)

    tokenizer = tiny_tokenizer()
    text_encoder = tiny_gemma(len(tokenizer), seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(**SANAVIDEO_VAE)
    torch.manual_seed(seed + 2)
    transformer = SanaVideoTransformer3DModel(**SANAVIDEO_TRANSFORMER)
    # The 2B 480p checkpoint samples with flow sigmas shifted by 8; training reads the same value.
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=8.0)
    pipe = SanaVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                             transformer=transformer, scheduler=scheduler)
    return _save_atomically(pipe, out, seed, "sanavideo")
