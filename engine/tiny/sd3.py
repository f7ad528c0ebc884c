"""The tiny SD3: two CLIPs with projection, T5, an AutoencoderKL that round-trips colours, a small MMDiT."""
from __future__ import annotations

from pathlib import Path

from tuner.engine.tiny.common import _save_atomically, is_complete
from tuner.engine.tiny.sana import _CONSTANT
from tuner.engine.tiny.tokenizers import tiny_clip_tokenizer, tiny_t5_tokenizer

# SD3: two CLIPs (hidden 16 and 24) whose penultimate states, side by side, fit within T5's width 48.
SD3_CLIP_HIDDEN = (16, 24)
SD3_T5_WIDTH = 48
SD3_TRANSFORMER = dict(sample_size=32, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                       attention_head_dim=16, num_attention_heads=4, joint_attention_dim=SD3_T5_WIDTH,
                       caption_projection_dim=64, pooled_projection_dim=sum(SD3_CLIP_HIDDEN),
                       pos_embed_max_size=32, qk_norm="rms_norm")
# One norm group: the output norms then see a large constant pair beside the colours (see below).
SD3_VAE = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
               up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
               norm_num_groups=1, sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
               shift_factor=0.0609, scaling_factor=1.5035)


def _make_kl_vae_invertible(vae) -> None:
    """Set the tiny AutoencoderKL's weights so its mean latents are (R, G, B, grey) of the 2×2-averaged
    image and decode(mean) is that image upsampled, as _make_vae_invertible does for Sana's DC-AE.

    Residual blocks and attention lose their main paths (identity), the downsampler averages 2×2,
    the upsampler's conv passes through. Before each output GroupNorm a 1×1 shortcut lays out
    (v, −v, …, K, −K): the group mean is 0 and its variance is almost K²-bound, so the norm scales
    every image alike, and SiLU(v) − SiLU(−v) = v undoes the activation.
    """
    import torch
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    def center_tap(conv, matrix, bias=None):
        conv.weight.zero_()
        conv.weight[:, :, 1, 1] = matrix
        conv.bias.zero_() if bias is None else conv.bias.copy_(bias)

    def signed_pairs(values: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A 1×1 map to (v0, −v0, v1, −v1, …, K, −K, 0…) and its bias, for `values` rows of inputs."""
        matrix, bias = torch.zeros(channels, values.shape[1]), torch.zeros(channels)
        for i, row in enumerate(values):
            matrix[2 * i], matrix[2 * i + 1] = row, -row
        bias[2 * len(values)], bias[2 * len(values) + 1] = _CONSTANT, -_CONSTANT
        return matrix, bias

    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, ResnetBlock2D):
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
            elif isinstance(module, Attention):
                module.to_out[0].weight.zero_()
                module.to_out[0].bias.zero_()
            elif isinstance(module, Downsample2D):
                module.conv.weight.zero_()
                module.conv.bias.zero_()
                for c in range(module.conv.out_channels):
                    module.conv.weight[c, c, :2, :2] = 0.25      # after its (0, 1, 0, 1) pad: a 2×2 mean
            elif isinstance(module, Upsample2D):
                center_tap(module.conv, torch.eye(module.conv.out_channels))

        def pairs_through_norm(norm, conv_out, rows: int, out_channels: int, extra_bias=None):
            # normalised pairs come back to ±v with the group's std (≈ K/√(channels/2)) as the weight
            std = _CONSTANT / (norm.num_channels / 2) ** 0.5
            norm.weight.copy_(torch.tensor([std] * (2 * rows) + [0.0] * (norm.num_channels - 2 * rows)))
            norm.bias.zero_()
            matrix = torch.zeros(out_channels, norm.num_channels)
            for i in range(rows):
                matrix[i, 2 * i], matrix[i, 2 * i + 1] = 1.0, -1.0
            center_tap(conv_out, matrix, extra_bias)

        enc, dec = vae.encoder, vae.decoder
        center_tap(enc.conv_in, torch.eye(enc.conv_in.out_channels, 3))
        colours = torch.cat([torch.eye(3), torch.full((1, 3), 1 / 3)]) @ torch.eye(3, 8)  # R, G, B, grey
        shortcut = enc.down_blocks[-1].resnets[0].conv_shortcut
        matrix, bias = signed_pairs(colours, shortcut.out_channels)
        shortcut.weight.zero_()
        shortcut.weight[:, :, 0, 0] = matrix
        shortcut.bias.copy_(bias)
        logvar = torch.cat([torch.zeros(4), torch.full((4,), -30.0)])  # a near-zero posterior std
        pairs_through_norm(enc.conv_norm_out, enc.conv_out, 4, 8, logvar)

        center_tap(dec.conv_in, torch.eye(dec.conv_in.out_channels, 4))
        shortcut = dec.up_blocks[-1].resnets[0].conv_shortcut
        matrix, bias = signed_pairs(torch.eye(3, shortcut.in_channels), shortcut.out_channels)
        shortcut.weight.zero_()
        shortcut.weight[:, :, 0, 0] = matrix
        shortcut.bias.copy_(bias)
        pairs_through_norm(dec.conv_norm_out, dec.conv_out, 3, 3)


def build_tiny_sd3(out: Path, seed: int = 0) -> Path:
    """Write the tiny SD3 to `out` (skipped when a complete one for this seed is there) and return `out`."""
    out = Path(out)
    if is_complete(out, seed, "sd3"):
        return out

    import torch
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip_tokenizer, t5_tokenizer = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    clips = []
    for index, hidden in enumerate(SD3_CLIP_HIDDEN):
        torch.manual_seed(seed + index)
        clips.append(CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(clip_tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=hidden, hidden_act="gelu",
            bos_token_id=0, eos_token_id=1, pad_token_id=1)))
    torch.manual_seed(seed + 2)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=SD3_T5_WIDTH, d_kv=8, d_ff=64, num_layers=2,
                                 num_heads=2, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0))
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(**SD3_VAE)
    _make_kl_vae_invertible(vae)
    torch.manual_seed(seed + 4)
    transformer = SD3Transformer2DModel(**SD3_TRANSFORMER)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clips[0], tokenizer=clip_tokenizer, text_encoder_2=clips[1], tokenizer_2=clip_tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokenizer)
    return _save_atomically(pipe, out, seed, "sd3")

