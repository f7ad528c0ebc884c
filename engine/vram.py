"""A rough per-GPU VRAM estimate for a training config, without torch (the TUI and presets use it).

The run has three peaks and the estimate is the largest:
- caching: the text encoders (in their text_encoder_N_precision) and the VAE encoding
  vae_batch_size images, or one clip at its frame size (the card's frame_size aspect, 832×480 for
  Sana Video) four frames at a time; the loop unloads the text encoders before the denoiser loads;
- training: the denoiser's weights (bytes per weight from base_model_precision, weight dtype
  from mixed_precision: bf16 → 2 B, fp16/no → fp32 masters, 4 B), trainable weights' gradients,
  optimizer state, DDP's gradient buckets (one more gradient copy, only with several GPUs), an
  EMA shadow in fp32 when ema_device is the accelerator (the default; on the main process's GPU, the
  one the estimate is for), activations, and the VAE (kept loaded for
  validation); with CREPA (video) also its frozen DINOv2, its trained head, and the decode and
  encoding of each batch's clean frames, which happen while the activations wait for the backward;
- validation: after zero_grad, so without gradients or training activations: the weights,
  optimizer state, EMA and VAE, plus the larger of one block's sampling activations (doubled by
  classifier-free guidance when validation_guidance > 1) and the VAE's fp32 decode of the
  validation image or video (Wan decodes one latent frame, four frames, at a time and returns
  the clip in fp32). The EMA swap keeps the trained weights in RAM (ema.py): one tensor at a time.
Assumptions (each a rough model, meant to rank presets and warn, not to promise):
- parameter counts are the published ones for known models (the family cards' sizes), or counted exactly from a
  local folder's safetensors headers, else from its transformer/config.json;
- quantised weights: int8/fp8 1 B, int4 0.5 B, int2 0.25 B plus a bf16 scale per 128 weights,
  nf4 0.5 B plus absmax per 64 (≈ 0.53 B); 2 % of the weights (embedders, proj_out) stay in bf16;
  nf4 (bitsandbytes) quantises linear layers only, so the 2-D convolutions (Sana's GLUMBConv
  feed-forward, ~47 % of Sana 1.6B, ~58 % of Sana Video with its temporal conv) stay in the weight
  dtype, where quanto quantises them too; one block's weights are dequantised at a time (a
  transient bf16 copy); the base is quantised before it reaches the GPU (quantize.py: on the CPU
  for quantize_via: cpu, else one bf16 layer at a time on the GPU, which the dequantised block
  already bounds), so loading has no bf16 peak of the whole model;
- trainable: everything (full), r·(in+out) per targeted D×D projection (LoRA; SD3.5 Medium's second
  attention only in its 13 dual-attention blocks, SD3's last block without to_add_out), the two Kronecker
  factors of LyCORIS' factorisation (LoKr); the adapter trains in the weight dtype;
- optimizer state per trainable weight: AdamW 2 states in the weight dtype, optimi-* add a bf16
  Kahan buffer on bf16 weights, 8-bit bitsandbytes 1 B per state, Lion 1 state, Prodigy 4; a paged
  optimizer's state is counted on the GPU: bitsandbytes pages only tensors of 100k elements or
  more, which an adapter's factors seldom are, and paging full-rank state is a fallback under
  pressure, not a saving to plan on;
- activations per token and block: ACT_ELEMENTS × hidden size elements in the compute dtype (a
  Korthikanti-style count for a transformer block with SDPA, no s² attention matrix); gradient
  checkpointing keeps only each checkpointed block's input plus one block being recomputed;
  tokens = latent pixels / patch area (+ text tokens for SD3's joint attention); a video clip
  has 1 + (frames - 1) / 4 latent frames at the checkpoint's 832×480 aspect;
- group offload never applies to the trained transformer (diffusers' hooks move a group's weights
  back to the CPU after its forward, which training cannot follow; offload.py): it changes nothing
  here, and the text encoder it offloads while caching is still counted whole;
- VAE encoding takes VAE_BYTES_PER_PIXEL per image pixel (fp32 feature maps at full size);
- the CUDA context adds CONTEXT_GB and the allocator's fragmentation FRAGMENTATION of the rest.
"""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from tuner.engine import families
from tuner.engine.config.lycoris import read_lycoris_config
from tuner.engine.config.models import Resolution, TrainConfig
from tuner.engine.config.values import parse_resolutions

GB = 1024 ** 3
# Rough figures, not measured on a GPU here; bench/gpu_checks.py sets every preset's measured peak beside them.
CONTEXT_GB = 0.8           # CUDA context + cuBLAS/cuDNN workspaces, as nvidia-smi shows for an idle torch process
FRAGMENTATION = 0.05       # the caching allocator's reserved-over-allocated overhead
ACT_ELEMENTS = 20          # elements kept per token and hidden unit per block (Korthikanti et al. 2022, SDPA)
VAE_BYTES_PER_PIXEL = 1536 # fp32 feature maps at full size: 128 channels × 3 live maps × 4 B
QUANTISED_SHARE = 0.98     # the embedders and proj_out that quantize.KEEP_FULL_PRECISION leaves in bf16
# CREPA's frozen encoders: (parameters, width), from the DINOv2 model cards (facebook/dinov2-small/base/large/giant)
DINOV2 = {"dinov2_vits14": (22.1e6, 384), "dinov2_vitb14": (86.6e6, 768), "dinov2_vitl14": (304e6, 1024),
          "dinov2_vitg14": (1.14e9, 1536)}
DINOV2_PATCH = 14
# A causal video VAE (Wan) decodes one latent frame at a time into this many frames (its temporal compression).
VIDEO_DECODE_CHUNK = 4

WEIGHT_BYTES = {"no_change": None, "int8-quanto": 1.0 + 2 / 128, "fp8-quanto": 1.0 + 2 / 128,
                "int4-quanto": 0.5 + 4 / 128, "int2-quanto": 0.25 + 4 / 128, "nf4-bnb": 0.5 + 4 / 64 * 0.5}
# (states, bytes per state or None for the weight dtype, Kahan buffer on bf16 weights)
OPTIMIZER_STATES = {"adamw": (2, None, False), "adamw_bf16": (2, None, True), "optimi-adamw": (2, None, True),
                    "optimi-stableadamw": (2, None, True), "optimi-lion": (1, None, True),
                    "bnb-adamw8bit": (2, 1.0, False), "bnb-lion8bit-paged": (1, 1.0, False), "prodigy": (4, None, False)}


_DEFAULTS = {key: info.default for key, info in TrainConfig.model_fields.items() if not info.is_required()}


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """LyCORIS' split of `dimension` into m × n with m ≤ n and m ≤ factor (as close to factor as divides)."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


# --- what the model is ----------------------------------------------------------------------------

def known_model(source: str | None, family: str) -> dict[str, Any] | None:
    """The published checkpoint a hub id or folder name points at (None when unknown; unset: the default)."""
    card = families.card(family)
    size = card.size_for(source)
    return size.as_dict(card) if size else None


def default_model(family: str) -> dict[str, Any]:
    """The family's default checkpoint, the size an unknown model is estimated as."""
    card = families.card(family)
    return card.sizes[0].as_dict(card)


def count_safetensors(folder: Path) -> int:
    """Exact parameter count of the *.safetensors files in `folder`, from their headers only."""
    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return total


def params_from_config(config: dict[str, Any]) -> int:
    """Approximate parameter count of a diffusers Sana / SanaVideo / SD3 transformer from its config.json."""
    cls = config.get("_class_name", "")
    layers = int(config["num_layers"])
    hidden = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    patch = config.get("patch_size", 1)
    patch_area = math.prod(patch[-2:]) if isinstance(patch, (list, tuple)) else int(patch) ** 2
    io = (int(config["in_channels"]) + int(config.get("out_channels") or config["in_channels"])) * patch_area * hidden
    if cls.startswith("SD3"):
        dual = len(config.get("dual_attention_layers") or ())
        # attention 8D² (+4D² dual), feed-forwards 2×8D², AdaLN-Zero 2×6D²; the last block's text
        # stream is context_pre_only (no feed-forward, no output projection, a 2D² norm): 13D² less
        blocks = layers * 36 * hidden ** 2 + dual * 4 * hidden ** 2 - 13 * hidden ** 2
        embed = (int(config["joint_attention_dim"]) + int(config["pooled_projection_dim"]) + 256 + 2 * hidden) * hidden
        return int(blocks + embed + io + 2 * hidden ** 2)
    inner = float(config.get("mlp_ratio", 2.5)) * hidden
    # linear self- and cross-attention 8D², GLUMBConv D→2h→h→D with a 3×3 depthwise conv (Sana Video: and a
    # 3×1 temporal conv, 3D²)
    temporal = 3 * hidden ** 2 if cls.startswith("SanaVideo") else 0
    blocks = layers * (8 * hidden ** 2 + 3 * inner * hidden + 20 * inner + 6 * hidden + temporal)
    embed = int(config["caption_channels"]) * hidden + hidden ** 2 + 256 * hidden + 7 * hidden ** 2
    return int(blocks + embed + io)


def count_conv_safetensors(folder: Path) -> int:
    """Parameters of the blocks' 2-D convolutions (4-D weights) in the *.safetensors files in `folder`, from their
    headers (the patch embedding is one of the layers kept in full precision anyway)."""
    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with open(path, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        total += sum(math.prod(v["shape"]) for k, v in header.items()
                     if k.startswith("transformer_blocks.") and len(v["shape"]) == 4)
    return total


def conv_params(model: dict[str, Any]) -> float:
    """Parameters in the denoiser's 2-D convolutions, which nf4 leaves unquantised (0 for a family without them):
    counted from the weights when known, else from the family card's conv_feed_forward."""
    if "conv_params" in model:
        return float(model["conv_params"])
    known = families.card(model["family"]).conv_feed_forward if model.get("family") in families.names() else None
    if known is None:
        return 0.0
    ratio, extra = float(model.get("mlp_ratio") or known[0]), known[1]
    hidden = model["hidden"]
    inner = ratio * hidden
    per_block = hidden * 2 * inner + 2 * inner * 9 + inner * hidden + extra * hidden ** 2
    return float(model["layers"] * per_block)


def model_from_folder(folder: Path, family: str) -> dict[str, Any]:
    """A known_model-like entry for a local diffusers folder: exact counts from weights, else from config.json."""
    folder = Path(folder)
    config = json.loads((folder / "transformer" / "config.json").read_text())
    counted = count_safetensors(folder / "transformer")
    params = counted or params_from_config(config)
    hidden = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    base = default_model(family)
    encoders = [count_safetensors(p) for p in sorted(folder.glob("text_encoder*")) if p.is_dir()]
    vae = count_safetensors(folder / "vae") if (folder / "vae").is_dir() else 0
    patch = config.get("patch_size", 1)
    vae_config = folder / "vae" / "config.json"
    if vae_config.is_file():
        vae_cfg = json.loads(vae_config.read_text())
        blocks = vae_cfg.get("encoder_block_out_channels") or vae_cfg.get("block_out_channels")
        if blocks and "dim_mult" not in vae_cfg:
            base["vae_factor"] = 2 ** (len(blocks) - 1)
    # exact from the weights when they are there, else conv_params' formula for the family
    extra = {"conv_params": count_conv_safetensors(folder / "transformer")} if counted else {}
    if "mlp_ratio" in config:
        extra["mlp_ratio"] = float(config["mlp_ratio"])
    extra["dual_attention_layers"] = len(config.get("dual_attention_layers") or ())
    return {**base, **extra, "params": params, "layers": int(config["num_layers"]), "hidden": hidden,
            "patch": patch[-1] if isinstance(patch, (list, tuple)) else int(patch),
            "text_encoders": [e for e in encoders if e] or base["text_encoders"], "vae_params": vae or base["vae_params"]}


# --- the estimate ----------------------------------------------------------------------------------

def _frame_pixels(model: dict[str, Any], cfg: dict[str, Any]) -> float:
    """Pixels of one training image, or of one video frame at the checkpoint's frame aspect (the family card's
    frame_size, 832×480 for Sana Video) with its shorter edge at the configured resolution."""
    size = Resolution(float(cfg["resolution"]), cfg["resolution_type"])
    frame = families.card(model["family"]).frame_size if model.get("family") in families.names() else None
    if model.get("video") and frame:
        return size.edge ** 2 * max(frame) / min(frame)
    return size.square_pixels


def _frames(cfg: dict[str, Any], validation: bool = False) -> int:
    """Frames per training clip (num_frames) or validation video; 81 (Sana Video's 5 s at 16 fps) when unset."""
    first = cfg["validation_num_video_frames"] if validation else cfg.get("num_frames")
    return int(first or cfg["validation_num_video_frames"] or 81)


def _tokens(model: dict[str, Any], cfg: dict[str, Any], pixels: float | None = None, frames: int | None = None) -> int:
    """Transformer tokens per sample at the training resolution (or the given pixels per frame and frames)."""
    if pixels is None:
        pixels = _frame_pixels(model, cfg)
    if frames is None:
        frames = _frames(cfg) if model.get("video") else 1
    latent_frames = 1 + (frames - 1) // 4 if model.get("video") else 1  # Wan's 4× temporal compression
    per_frame = pixels / (model["vae_factor"] * model["patch"]) ** 2
    return int(per_frame * latent_frames + model.get("text_tokens", 0))


def _video_decode(pixels: float, frames: int, clips: int) -> float:
    """A causal video VAE's decode of `clips` clips of `frames` frames of `pixels` each: fp32 feature maps for
    one chunk of frames at a time, plus the decoded clips in fp32 (3 channels)."""
    return VAE_BYTES_PER_PIXEL * pixels * VIDEO_DECODE_CHUNK * clips + 3 * 4 * pixels * frames


def _lycoris_settings(path: str | None) -> dict[str, Any]:
    """The run's LoKr settings: its lycoris_config when readable, else tuner's defaults."""
    try:
        return read_lycoris_config(path if path and Path(path).expanduser().is_file() else None)
    except ValueError:  # `tuner check` reports a broken file; the estimate sizes the defaults
        return read_lycoris_config(None)


def _trainable(model: dict[str, Any], cfg: dict[str, Any]) -> float:
    if cfg["model_type"] == "full":
        return model["params"]
    # SD3.5 Medium's second self-attention (to_q/k/v/out of attn2) exists only in its dual_attention_layers
    modules = (model["layers"] * model["attn_modules"] + model.get("dual_attention_layers", 0) * len(families.ATTENTION_TARGETS)
               - model.get("last_block_fewer_targets", 0))
    hidden = model["hidden"]
    if cfg["lora_type"] == "lycoris":
        settings = _lycoris_settings(cfg.get("lycoris_config"))
        m, n = factorization(hidden, int(settings["factor"]))
        dim = int(settings["linear_dim"])
        w2 = n * n if dim >= n / 2 else 2 * n * dim
        return modules * (m * m + w2)
    return modules * int(cfg["lora_rank"]) * 2 * hidden


def estimate(config: dict[str, Any], hardware: dict[str, Any] | None = None, *,
             model: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"total_gb", "parts" (GB per item, all peaks), "peaks" (GB: training, validation, caching, before
    fragmentation and the CUDA context), "assumptions"} for one GPU of a run of `config`.

    `hardware` may give "gpus" (a count or probe()'s list; more than one adds DDP buckets);
    `model` overrides the lookup (e.g. model_from_folder of a local base).
    """
    # Unset keys take TrainConfig's defaults, so the estimate never restates one.
    cfg = {**_DEFAULTS, **{k: v for k, v in config.items() if v is not None and v != ""}}
    family = cfg["model_family"]
    notes: list[str] = []
    if model is None:
        source = cfg.get("pretrained_model_name_or_path")
        if source and (Path(source) / "transformer" / "config.json").is_file():
            model = model_from_folder(Path(source), family)
        else:
            model = known_model(source, family)
            if model is None:
                model = default_model(family)
                notes.append(f"{source!r} is not a known model: sized as {families.card(family).sizes[0].key}")
    gpus = (hardware or {}).get("gpus", 1)
    gpus = len(gpus) if isinstance(gpus, list) else int(gpus or 1)
    mixed = cfg["mixed_precision"]
    wbytes = 2.0 if mixed == "bf16" else 4.0
    act_bytes = 4.0 if mixed == "no" else 2.0
    precision = cfg["base_model_precision"]
    qbytes = WEIGHT_BYTES.get(precision)
    params = model["params"]
    parts: dict[str, float] = {}

    # training peak
    if qbytes is None:
        weights = params * wbytes
    else:
        # nf4 has no convolution layer: those weights stay in bf16 beside the 2 % kept in full precision
        kept = (1 - QUANTISED_SHARE) + (conv_params(model) / params if precision == "nf4-bnb" else 0.0)
        weights = params * ((1 - kept) * qbytes + kept * 2)
    per_block = params / model["layers"]
    if cfg["enable_group_offload"]:
        notes.append("group offload: only the text encoder is offloaded (while caching); the trained "
                     "transformer stays on the GPU")
    parts["weights"] = weights
    if qbytes is not None:
        parts["dequantised_block"] = per_block * 2
    trainable = _trainable(model, cfg)
    tbytes = 2.0 if mixed == "bf16" else 4.0
    if cfg["model_type"] != "full":
        parts["adapter"] = trainable * tbytes
    parts["gradients"] = trainable * tbytes
    states, per_state, kahan = OPTIMIZER_STATES.get(cfg["optimizer"], (2, None, False))
    optimizer = trainable * states * (per_state or tbytes) + (trainable * 2 if kahan and tbytes == 2 else 0)
    parts["optimizer"] = optimizer
    if cfg["use_ema"] and cfg["ema_device"] == "accelerator":
        parts["ema"] = trainable * 4
    sharded = bool(cfg.get("fsdp_enable")) and gpus > 1 and cfg["model_type"] == "full"
    if sharded:
        # sharding.py: each GPU holds 1/N of the weights, gradients, optimizer state and EMA, and gathers
        # a block's full weights for its forward and backward (the next one is prefetched meanwhile)
        for key in ("weights", "gradients", "optimizer", "ema"):
            if key in parts:
                parts[key] /= gpus
        parts["fsdp_gathered_blocks"] = 2 * per_block * wbytes
        notes.append(f"FSDP2 over {gpus} GPUs: weights, gradients, optimizer state and EMA sharded")
    elif gpus > 1:
        parts["ddp_buckets"] = trainable * tbytes
    batch = int(cfg["train_batch_size"])
    tokens = _tokens(model, cfg)
    layer_act = ACT_ELEMENTS * tokens * model["hidden"] * act_bytes * batch
    if cfg["gradient_checkpointing"]:
        interval = max(1, int(cfg["gradient_checkpointing_interval"] or 1))
        kept = math.ceil(model["layers"] / interval)
        parts["activations"] = kept * tokens * model["hidden"] * act_bytes * batch \
            + (model["layers"] - kept) * layer_act + layer_act
    else:
        parts["activations"] = model["layers"] * layer_act
    parts["vae"] = model["vae_params"] * 4
    pixels = _frame_pixels(model, cfg)
    if cfg["crepa_enabled"] and model.get("video"):
        # crepa.py: a frozen DINOv2 in the weight dtype beside the denoiser, a trained fp32 head
        # (D → D → encoder width: weights, gradients, optimizer state), and after each forward, while the
        # activations wait for the backward, the batch's clean latents decoded and every frame encoded
        dino_params, dino_dim = DINOV2[cfg["crepa_encoder"]]
        parts["crepa_encoder"] = dino_params * wbytes
        head = model["hidden"] ** 2 + model["hidden"] * dino_dim
        parts["crepa_head"] = head * 4 * (2 + states)
        frames = _frames(cfg) * batch
        dino_tokens = (int(cfg["crepa_encoder_image_size"]) // DINOV2_PATCH) ** 2 + 1
        encode_frames = ACT_ELEMENTS * dino_tokens * dino_dim * wbytes * frames  # one layer at a time (no_grad)
        parts["crepa_targets"] = max(_video_decode(pixels, frames, batch), encode_frames)
    training = sum(parts.values())
    held = training - parts["gradients"] - parts["activations"] - parts.get("crepa_targets", 0.0)

    # validation peak (validation.py): after zero_grad, so no gradients or training activations; what stays
    # is the weights, the optimizer state, the EMA and the VAE. Sampling holds one block's activations at a
    # time for the cond and uncond halves of classifier-free guidance (guidance > 1), then the VAE decodes
    # in fp32 (Wan's vae_dtype default). The EMA swap keeps the trained weights in RAM (ema.py), so it adds
    # one tensor at a time here, not a copy of the model.
    validation = 0.0
    if not cfg["validation_disable"]:
        try:
            sizes = parse_resolutions(cfg["validation_resolution"]) if cfg["validation_resolution"] else []
        except ValueError:  # `tuner check` names a bad size; the estimate takes the training size
            sizes = []
        v_pixels = max((w * h for w, h in sizes), default=pixels)
        v_frames = _frames(cfg, validation=True) if model.get("video") else 1
        guided = 2 if float(cfg["validation_guidance"]) > 1 else 1
        v_tokens = _tokens(model, cfg, v_pixels, v_frames)
        denoise = ACT_ELEMENTS * v_tokens * model["hidden"] * act_bytes * guided
        decode = _video_decode(v_pixels, v_frames, 1) if model.get("video") else VAE_BYTES_PER_PIXEL * v_pixels
        parts.update({"validation_denoise": denoise, "validation_decode": decode})
        if sharded:  # the main GPU samples with a gathered, unsharded copy of the weights
            parts["validation_gathered_copy"] = params * wbytes
            denoise += parts["validation_gathered_copy"]
            decode += parts["validation_gathered_copy"]
        validation = held + max(denoise, decode)

    # caching peak: text encoders + VAE encoding; the denoiser is not loaded yet
    encoders = 0.0
    for index, count in enumerate(model["text_encoders"], start=1):
        tq = WEIGHT_BYTES.get(cfg[f"text_encoder_{index}_precision"])
        encoders += count * (wbytes if tq is None else tq)
    if model.get("video"):
        # one clip at a time, its frames through the causal 3D VAE in chunks of four, the clip itself in fp32
        encode = VAE_BYTES_PER_PIXEL * pixels * VIDEO_DECODE_CHUNK + 3 * 4 * pixels * _frames(cfg)
    else:
        encode = VAE_BYTES_PER_PIXEL * pixels * int(cfg["vae_batch_size"])
    caching = encoders + model["vae_params"] * 4 + encode
    parts.update({"caching_text_encoders": encoders, "caching_vae_encode": encode})

    peaks = {"training": training, "validation": validation, "caching": caching}
    worst = max(peaks, key=peaks.get)
    total = (peaks[worst] * (1 + FRAGMENTATION)) / GB + CONTEXT_GB
    notes.append(f"peak while {worst}; {tokens} tokens per sample, {trainable / 1e6:.1f} M trainable weights")
    return {"total_gb": round(total, 2), "parts": {k: round(v / GB, 3) for k, v in parts.items()},
            "peaks": {k: round(v / GB, 3) for k, v in peaks.items()}, "assumptions": notes}
