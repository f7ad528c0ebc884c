"""Build a tiny, deterministic Sana (or SD3) in diffusers format from config, for tests and the demo.

The folder has exactly the layout `SanaPipeline.save_pretrained` writes, so the engine loads it
through the same `from_pretrained` path as a real model. Nothing is downloaded: the Gemma
tokenizer is built from an in-memory vocabulary (caption words + every printable ASCII
character + byte fallback, so any text tokenizes).
"""
from __future__ import annotations

import json
import shutil
import string
import tempfile
import time
from pathlib import Path

# Bump when anything below changes the weights or layout: it is part of every cache key.
TINY_SANA_VERSION = 2
MARKER = "tiny.json"
_PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
TINY_SD3_VERSION = 2
_SD3_PARTS = _PARTS + ("text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")
TINY_SANAVIDEO_VERSION = 1
_VERSIONS = {"sana": TINY_SANA_VERSION, "sd3": TINY_SD3_VERSION, "sanavideo": TINY_SANAVIDEO_VERSION}
_PARTS_OF = {"sana": _PARTS, "sd3": _SD3_PARTS, "sanavideo": _PARTS}

# Words the demo's captions use, so they become one token each instead of a run of characters.
_WORDS = """
a an the photo photograph picture image drawing painting render illustration of on in with and
at to by near over under above below beside left right top bottom center centre middle corner
red green blue yellow orange purple pink white black gray grey brown cyan magenta violet gold
silver dark light bright pale colourful colorful colour color colours colors
circle circles square squares triangle triangles star stars ring rings cross dot dots stripe
stripes rectangle diamond hexagon shape shapes line lines disc blob
small large big tiny huge simple plain solid flat striped smooth textured blurry sharp
background foreground scene one two three four many single pair
cat dog tree house sky sun moon flower car person face water grass
""".split()

GEMMA_HIDDEN = 16
# Twice as wide as the smallest that runs (64 = 4 heads × 16): the demo's loss falls visibly
# while a training step at 64 px, batch 2, stays ~0.05 s on 2 cores.
TRANSFORMER = dict(in_channels=4, out_channels=4, num_layers=2, num_attention_heads=4,
                   attention_head_dim=16, num_cross_attention_heads=4, cross_attention_head_dim=16,
                   cross_attention_dim=64, caption_channels=GEMMA_HIDDEN, mlp_ratio=2.5,
                   sample_size=32, patch_size=1)
VAE = dict(in_channels=3, latent_channels=4, attention_head_dim=2,
           encoder_block_types=("ResBlock", "EfficientViTBlock"),
           decoder_block_types=("ResBlock", "EfficientViTBlock"),
           encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
           encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
           encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1),
           downsample_block_type="conv", upsample_block_type="interpolate",
           decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A Gemma-style BPE vocabulary: specials, 256 byte pieces, characters, then whole caption words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    # Hand-written merge chains for several words clash (the "le" of "left" splits "circle"), so
    # the merges are learned by the BPE trainer, one "▁word" unit at a time: merges never cross
    # a "▁", hence Gemma's whole-string BPE gives every listed word one token.
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Replace(" ", "▁")
    bpe.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    alphabet = list("▁" + string.ascii_letters + string.digits + string.punctuation)
    trainer = trainers.BpeTrainer(vocab_size=100_000, min_frequency=1, initial_alphabet=alphabet,
                                  limit_alphabet=len(alphabet), show_progress=False)
    # Gemma has no prefix space: a word is "▁red" after a space and "red" at the start.
    bpe.train_from_iterator(_WORDS + [" " + word for word in _WORDS], trainer)
    learned = json.loads(bpe.to_str())["model"]

    vocab: dict[str, int] = {}
    for special in ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>"):
        vocab[special] = len(vocab)
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for piece, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(pair) for pair in learned["merges"]]
    return vocab, merges


def tiny_tokenizer():
    """The GemmaTokenizer of the tiny model, built without any download."""
    from transformers import GemmaTokenizer

    vocab, merges = _vocab_and_merges()
    return GemmaTokenizer(vocab=vocab, merges=merges, model_max_length=8192, add_bos_token=True)


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


def _marker(seed: int, family: str = "sana") -> dict:
    return {"builder": "tuner.engine.tiny", "family": family, "version": _VERSIONS[family], "seed": seed}


def is_complete(out: Path, seed: int = 0, family: str = "sana") -> bool:
    """Whether `out` already holds this builder version's tiny model of `family` for `seed`."""
    marker = out / MARKER
    if not marker.is_file() or not (out / "model_index.json").is_file():
        return False
    try:
        found = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return found == _marker(seed, family) and all((out / part).is_dir() for part in _PARTS_OF[family])


def build_tiny_sana(out: Path, seed: int = 0) -> Path:
    """Write the tiny Sana to `out` (skipped when a complete one for this seed is there) and return `out`."""
    out = Path(out)
    if is_complete(out, seed):
        return out

    import torch
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = tiny_tokenizer()
    # Each component gets its own seed so changing one part's size leaves the others' weights alone.
    torch.manual_seed(seed)
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=GEMMA_HIDDEN, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=8192,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager"))
    torch.manual_seed(seed + 1)
    vae = AutoencoderDC(**VAE)
    _make_vae_invertible(vae)
    torch.manual_seed(seed + 2)
    transformer = SanaTransformer2DModel(**TRANSFORMER)
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=3.0)
    pipe = SanaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                        transformer=transformer, scheduler=scheduler)
    return _save_atomically(pipe, out, seed, "sana")


def _save_atomically(pipe, out: Path, seed: int, family: str) -> Path:
    """Save `pipe` with its marker next to `out` and rename it there, so an interrupted build never looks complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / MARKER).write_text(json.dumps(_marker(seed, family), indent=2) + "\n")
        if is_complete(out, seed, family):  # another process finished the same build first
            return out
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


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


def _word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that join each word (with CLIP's "</w>" end mark) into one piece.

    Learned here rather than by the tokenizers trainer, whose ties fall differently from run to
    run: the most frequent pair is merged first, ties by the pair's text, so a build is repeatable.
    """
    from collections import Counter

    words_left = [tuple(word[:-1]) + (word[-1] + "</w>",) for word in dict.fromkeys(words)]
    merges = []
    while True:
        pairs = Counter(pair for word in words_left for pair in zip(word, word[1:]))
        if not pairs:
            return merges
        pair = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(pair)
        joined = []
        for word in words_left:
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == pair:
                    out.append(pair[0] + pair[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            joined.append(tuple(out))
        words_left = joined


def tiny_clip_tokenizer():
    """A CLIPTokenizer whose BPE makes every caption word one token; specials first (bos 0, eos/pad 1)."""
    from transformers import CLIPTokenizer

    # CLIP's BPE works on bytes shown as printable characters (GPT-2's table): all 256 make any text tokenize.
    shown = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = [chr(c) for c in shown] + [chr(256 + n) for n in range(256 - len(shown))]
    merges = _word_merges(_WORDS)
    # The CLIP text model pools at the first eos id its config names, so the specials' ids are fixed.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for piece in alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]:
        vocab.setdefault(piece, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_t5_tokenizer():
    """A unigram T5Tokenizer: each caption word one piece, single characters for anything else."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("▁" + word, -1.0) for word in _WORDS]
    pieces += [("▁", -2.0)] + [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=list(dict(pieces).items()), extra_ids=0)


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
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Gemma2Model(Gemma2Config(
        vocab_size=len(tokenizer), hidden_size=GEMMA_HIDDEN, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=8192,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager"))
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


_BUILDERS = {"sana": build_tiny_sana, "sd3": build_tiny_sd3, "sanavideo": build_tiny_sanavideo}


def command(args) -> int:
    """`tuner tiny {sana,sd3} OUT`: build the tiny model and say where it is."""
    if args.family not in _BUILDERS:
        print(f"tuner tiny: no tiny model for family {args.family!r} (only {', '.join(map(repr, _BUILDERS))})")
        return 2
    started = time.perf_counter()
    out = Path(args.out)
    reused = is_complete(out, family=args.family)
    _BUILDERS[args.family](out)
    verb = "already there" if reused else f"built in {time.perf_counter() - started:.1f} s"
    print(f"tiny {args.family} (v{_VERSIONS[args.family]}) {verb}: {out.resolve()}")
    return 0
