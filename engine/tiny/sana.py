"""The tiny Sana: Gemma2, a DC-AE whose latents are the downsampled colours, a small transformer."""
from __future__ import annotations

from pathlib import Path

from tuner.engine.tiny.common import _save_atomically, is_complete
from tuner.engine.tiny.tokenizers import tiny_tokenizer

GEMMA_HIDDEN = 16
# Twice as wide as the smallest that runs (64 = 4 heads × 16): the demo's loss falls visibly
# while a training step at 64 px, batch 2, stays ~0.05 s on 2 cores.
TRANSFORMER = dict(in_channels=4, out_channels=4, num_layers=2, num_attention_heads=4,
                   attention_head_dim=16, num_cross_attention_heads=4, cross_attention_head_dim=16,
                   cross_attention_dim=64, caption_channels=GEMMA_HIDDEN, mlp_ratio=2.5,
                   sample_size=32, patch_size=1)
# The demo's transformer: four blocks, 128 wide, on the demo DC-AE's 16×16 latents of a 64 px
# image with 1×1 patches (256 tokens). Sana's own transformer has no position embedding (its
# convolutions see only neighbours), and this small one then drew several blobs scattered over
# the image; sin-cos positions (interpolation_scale) let it put one shape in the middle. The
# test-sized one above is faster to build and step but learns too little to look at.
DEMO_GEMMA_HIDDEN = 32   # room for an orthogonal row per word of the demo's captions (14 tokens)
DEMO_TRANSFORMER = dict(TRANSFORMER, num_layers=4, num_attention_heads=4, attention_head_dim=32,
                        num_cross_attention_heads=4, cross_attention_head_dim=32, cross_attention_dim=128,
                        caption_channels=DEMO_GEMMA_HIDDEN, sample_size=16, patch_size=1,
                        interpolation_scale=1)
VAE = dict(in_channels=3, latent_channels=4, attention_head_dim=2,
           encoder_block_types=("ResBlock", "EfficientViTBlock"),
           decoder_block_types=("ResBlock", "EfficientViTBlock"),
           encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
           encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
           encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
           downsample_block_type="conv", upsample_block_type="interpolate",
           decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)
# The demo's DC-AE: one stage more, so a 64 px image is 16×16 latents and the transformer can take
# 1×1 patches (2×2 patches left a grid: each patch's four pixels came out a little different).
DEMO_VAE = dict(VAE, encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
                decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
                encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                encoder_qkv_multiscales=((), (), (5,)), decoder_qkv_multiscales=((), (), (5,)),
                encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1))

# Latents are GAIN × (R, G, B, mean) of the 2×2-averaged image; the decoder's constant channel
# is large so that its RMSNorm divides every pixel by (almost) the same number.
GAIN = 2.0
_CONSTANT = 100.0


def _make_vae_invertible(vae) -> None:
    """Set the tiny DC-AE's weights so decode(encode(x)) is x at half resolution, upsampled.

    A randomly initialised autoencoder maps every image to coloured noise, so the demo's samples
    would never resemble its dataset. Every block here has a residual or shortcut path: zeroing
    the main paths leaves 2×2 average pooling (encoder) and nearest upsampling (decoder), and the
    convolutions at both ends are set to carry RGB in and out of the 4 latent channels.
    """
    import torch
    from diffusers.models.autoencoders.autoencoder_dc import DCDownBlock2d, DCUpBlock2d, ResBlock
    from diffusers.models.transformers.sana_transformer import GLUMBConv

    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, ResBlock):
                module.conv2.weight.zero_()
            elif isinstance(module, (DCDownBlock2d, DCUpBlock2d)):
                module.conv.weight.zero_()
                module.conv.bias.zero_()
            elif isinstance(module, GLUMBConv):
                module.conv_point.weight.zero_()
            elif hasattr(module, "to_out") and hasattr(module, "to_qkv_multiscale"):
                module.to_out.weight.zero_()

        def center_tap(conv, matrix, bias=None):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = matrix
            conv.bias.zero_() if bias is None else conv.bias.copy_(bias)

        enc, dec = vae.encoder, vae.decoder
        center_tap(enc.conv_in, torch.eye(8, 3))                      # h = (R, G, B, 0, …)
        target = torch.zeros(4, 8)
        target[:3, :3] = torch.eye(3) * GAIN
        target[3, :3] = GAIN / 3
        shortcut = torch.zeros(4, 8)                                  # mean of channel pairs
        for c in range(4):
            shortcut[c, 2 * c: 2 * c + 2] = 0.5
        center_tap(enc.conv_out, target - shortcut)

        # decoder: latents → (R, G, B, -R, -G, -B, constant, 0), so the ReLU before conv_out keeps both signs
        target = torch.zeros(8, 4)
        target[:3, :3] = torch.eye(3) / GAIN
        target[3:6, :3] = -torch.eye(3) / GAIN
        repeat = torch.zeros(8, 4)
        for c in range(8):
            repeat[c, c // 2] = 1.0
        bias = torch.zeros(8)
        bias[6] = _CONSTANT
        center_tap(dec.conv_in, target - repeat, bias)
        rms = _CONSTANT / 8 ** 0.5
        dec.norm_out.weight.copy_(torch.tensor([rms] * 6 + [0.0, 0.0]))
        dec.norm_out.bias.zero_()
        out = torch.zeros(3, 8)
        out[:, :3] = torch.eye(3)
        out[:, 3:6] = -torch.eye(3)
        center_tap(dec.conv_out, out)

def _smooth_upsampling(vae) -> None:
    """Turn the invertible DC-AE's nearest upsampling into bilinear, so decoded shapes have smooth edges.

    Each up block adds its conv of the nearest-upsampled input to that input: a conv of
    (tent − identity) makes the sum the tent-filtered nearest upsampling, which is bilinear.
    Zero padding dims the border pixels' colours and the constant channel alike, and the output
    RMSNorm divides the dimming back out.
    """
    import torch
    from diffusers.models.autoencoders.autoencoder_dc import DCUpBlock2d

    tent = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = torch.outer(tent, tent)
    kernel[1, 1] -= 1.0
    with torch.no_grad():
        for module in vae.decoder.modules():
            if isinstance(module, DCUpBlock2d):
                module.conv.weight.zero_()
                for c in range(module.conv.out_channels):
                    module.conv.weight[c, c] = kernel


def tiny_gemma(vocab_size: int, seed: int):
    """The tiny Gemma2 text encoder Sana and Sana Video share (seeded before it is built)."""
    import torch
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    return Gemma2Model(Gemma2Config(
        vocab_size=vocab_size, hidden_size=GEMMA_HIDDEN, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=8192,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager"))


def demo_gemma(tokenizer, seed: int):
    """The demo's Gemma2: each output is its token's own embedding, orthogonal for the demo's caption words.

    In the random tiny Gemma every sublayer adds a unit-RMS output (Gemma2 norms them after the
    sublayer) to embeddings of RMS ~0.1, so the prefix the prompts share drowns the words that
    tell them apart (red and yellow came out at cosine 0.91). Zeroing the sublayers' output
    projections leaves the residual path, and the final norm hands each token's embedding on;
    the words of the demo's captions get orthonormal rows, so no two of them look alike.
    """
    import torch
    from transformers import Gemma2Config, Gemma2Model

    from tuner.engine.demo import all_captions

    torch.manual_seed(seed)
    model = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=DEMO_GEMMA_HIDDEN, intermediate_size=2 * DEMO_GEMMA_HIDDEN,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=8192, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        attn_implementation="eager"))
    ids = sorted({i for text in all_captions() for i in tokenizer(text).input_ids})
    if len(ids) > DEMO_GEMMA_HIDDEN:
        raise ValueError(f"the demo's captions have {len(ids)} distinct tokens; DEMO_GEMMA_HIDDEN "
                         f"({DEMO_GEMMA_HIDDEN}) must be at least that for them to be orthogonal")
    with torch.no_grad():
        for layer in model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        basis, _ = torch.linalg.qr(torch.randn(DEMO_GEMMA_HIDDEN, DEMO_GEMMA_HIDDEN))
        model.embed_tokens.weight[ids] = basis[:len(ids)]
    return model


def build_tiny_sana(out: Path, seed: int = 0, size: str = "test") -> Path:
    """Write the tiny Sana to `out` (skipped when a complete one for this seed is there) and return `out`.

    `size` "test" is the smallest that trains (tests); "demo" has the wider transformer the demo shows.
    """
    if size not in ("test", "demo"):
        raise ValueError(f"tiny Sana size {size!r}: expected 'test' or 'demo'")
    family = "sana" if size == "test" else "sana-demo"
    out = Path(out)
    if is_complete(out, seed, family):
        return out

    import torch
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    tokenizer = tiny_tokenizer()
    # Each component gets its own seed so changing one part's size leaves the others' weights alone.
    text_encoder = tiny_gemma(len(tokenizer), seed) if size == "test" else demo_gemma(tokenizer, seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderDC(**(VAE if size == "test" else DEMO_VAE))
    _make_vae_invertible(vae)
    if size == "demo":
        _smooth_upsampling(vae)
    torch.manual_seed(seed + 2)
    transformer = SanaTransformer2DModel(**(TRANSFORMER if size == "test" else DEMO_TRANSFORMER))
    if size == "demo":
        with torch.no_grad():  # as DiT starts: the output layer at zero, so training starts from "no velocity"
            transformer.proj_out.weight.zero_()
            transformer.proj_out.bias.zero_()
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=3.0)
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                        transformer=transformer, scheduler=scheduler)
    return _save_atomically(pipe, out, seed, family)
