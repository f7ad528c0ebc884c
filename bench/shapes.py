"""The published architectures the benchmarks build with random weights: one home for their config values.

Keys are the family cards' ModelSize keys (engine/families.py). `transformer_config` prefers the
checkpoint's own transformer/config.json when the Hugging Face cache has it; nothing is downloaded.
`random_transformer` draws the weights one tensor at a time on the GPU when there is one (seconds
instead of minutes for 8B weights) and keeps them in RAM as bf16.
"""
from __future__ import annotations

from pathlib import Path

# transformer/config.json of each checkpoint (the values that differ from diffusers' defaults).
SHAPES = {
    "sd3.5-large": ("stabilityai/stable-diffusion-3.5-large", "SD3Transformer2DModel", dict(
        attention_head_dim=64, caption_projection_dim=2432, in_channels=16, joint_attention_dim=4096,
        num_attention_heads=38, num_layers=38, out_channels=16, patch_size=2, pooled_projection_dim=2048,
        pos_embed_max_size=192, qk_norm="rms_norm", sample_size=128)),
    "sd3.5-medium": ("stabilityai/stable-diffusion-3.5-medium", "SD3Transformer2DModel", dict(
        attention_head_dim=64, caption_projection_dim=1536, dual_attention_layers=list(range(13)), in_channels=16,
        joint_attention_dim=4096, num_attention_heads=24, num_layers=24, out_channels=16, patch_size=2,
        pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm", sample_size=128)),
    "sana-1.6b": ("terminusresearch/sana-1.6b-1024px", "SanaTransformer2DModel", dict(
        attention_head_dim=32, caption_channels=2304, cross_attention_dim=2240, cross_attention_head_dim=112,
        in_channels=32, mlp_ratio=2.5, num_attention_heads=70, num_cross_attention_heads=20, num_layers=20,
        out_channels=32, patch_size=1, sample_size=32, norm_elementwise_affine=False, norm_eps=1e-6)),
    # SanaMS_600M_P1_D28: width 1152 (36 linear-attention heads of 32), 16 cross-attention heads of 72
    "sana-600m": ("Efficient-Large-Model/Sana_600M_1024px_diffusers", "SanaTransformer2DModel", dict(
        attention_head_dim=32, caption_channels=2304, cross_attention_dim=1152, cross_attention_head_dim=72,
        in_channels=32, mlp_ratio=2.5, num_attention_heads=36, num_cross_attention_heads=16, num_layers=28,
        out_channels=32, patch_size=1, sample_size=32, norm_elementwise_affine=False, norm_eps=1e-6)),
    "sanavideo-2b": ("Efficient-Large-Model/SANA-Video_2B_480p_diffusers", "SanaVideoTransformer3DModel", dict(
        in_channels=16, out_channels=16, num_attention_heads=20, attention_head_dim=112, num_layers=20,
        num_cross_attention_heads=20, cross_attention_head_dim=112, cross_attention_dim=2240, caption_channels=2304,
        mlp_ratio=3.0, attention_bias=False, sample_size=30, patch_size=(1, 2, 2), norm_elementwise_affine=False,
        norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=1024)),
}


def transformer_config(key: str, layers: int | None = None) -> tuple[type, dict]:
    """(transformer class, config) of `key`, cut to its first `layers` blocks when given."""
    import json

    import diffusers
    from huggingface_hub import try_to_load_from_cache

    repo, cls_name, config = SHAPES[key]
    cached = try_to_load_from_cache(repo, "transformer/config.json")
    if isinstance(cached, str):
        config = {k: v for k, v in json.loads(Path(cached).read_text()).items() if not k.startswith("_")}
    config = dict(config)
    if layers is not None:
        config["num_layers"] = min(layers, config["num_layers"])
        if "dual_attention_layers" in config:  # SD3.5 Medium's MMDiT-X blocks that remain
            config["dual_attention_layers"] = [i for i in config["dual_attention_layers"] if i < layers]
    return getattr(diffusers, cls_name), config


def random_transformer(key: str, folder: Path, layers: int | None = None, seed: int = 0) -> Path:
    """Write `key`'s transformer with random bf16 weights to `folder` (kept when already there); returns it."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device

    if (folder / "config.json").is_file():
        return folder
    cls, config = transformer_config(key, layers)
    with init_empty_weights():
        model = cls.from_config(config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = torch.Generator(device).manual_seed(seed)
    for name, param in list(model.named_parameters()):
        value = torch.randn(param.shape, device=device, dtype=torch.bfloat16, generator=generator) * 0.02
        set_module_tensor_to_device(model, name, "cpu", value=value.cpu())
    model.save_pretrained(folder, max_shard_size="5GB")
    return folder
