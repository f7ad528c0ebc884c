"""The typed settings: config.json (TrainConfig) and multidatabackend.json's entries (DatasetConfig),
with SimpleTuner's key names, a one-line description per key and the values derived from them."""
from __future__ import annotations

import json
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticUndefined

from tuner.engine import families
from tuner.engine.config.values import parse_key_values, parse_resolutions, split_list

# --------------------------------------------------------------------------------------------
# Closed value sets (shared with the wizard and the engine)
# --------------------------------------------------------------------------------------------

Precision = Literal["no_change", "int8-quanto", "int4-quanto", "int2-quanto", "fp8-quanto", "nf4-bnb"]
PLAIN_PRECISIONS = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32", "no_change")
QUANTISED_PRECISIONS = ("int8-quanto", "int4-quanto", "int2-quanto", "fp8-quanto", "nf4-bnb")
# report_to's names: the trackers (engine/train/trackers.py), all of them, or none.
REPORT_TO = ("tensorboard", "wandb", "all", "none")
OptimizerName = Literal[
    "adamw", "adamw_bf16", "optimi-adamw", "optimi-lion", "optimi-stableadamw",
    "bnb-adamw8bit", "bnb-lion8bit-paged", "prodigy",
]
SchedulerName = Literal["constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial"]

MEGAPIXEL = 1_000_000
ResolutionType = Literal["pixel", "area", "pixel_area"]


@dataclass(frozen=True)
class Resolution:
    """A training size in one of SimpleTuner's three units, with the conversions every reader needs."""

    value: float
    unit: str   # pixel: the shorter edge; area: megapixels; pixel_area: an area given as an edge length

    @property
    def area(self) -> float | None:
        """The target area in px² (None for `pixel`, where the shorter edge is fixed instead)."""
        if self.unit == "area":
            return self.value * MEGAPIXEL
        if self.unit == "pixel_area":
            return float(self.value) ** 2
        return None

    @property
    def square_pixels(self) -> float:
        """Pixels of a square sample at this size."""
        return self.area if self.area is not None else float(self.value) ** 2

    @property
    def edge(self) -> int:
        """The side of a square sample: megapixels become an edge on a 64 px grid (at least 64)."""
        if self.unit == "area":
            return max(64, round(math.sqrt(self.value * MEGAPIXEL) / 64) * 64)
        return int(self.value)


_MODEL_CONFIG = ConfigDict(extra="forbid", coerce_numbers_to_str=True, validate_default=False,
                           protected_namespaces=())


class TreadRoute(BaseModel):
    """One TREAD route: this share of the image tokens skips blocks start_layer_idx..end_layer_idx."""

    model_config = _MODEL_CONFIG
    selection_ratio: float = Field(gt=0, lt=1, description="Share of the tokens routed past the span (0.5: half).")
    start_layer_idx: int = Field(description="First block the routed tokens skip (negative: from the end).")
    end_layer_idx: int = Field(description="Last block they skip, inclusive (negative: from the end).")


class TreadConfig(BaseModel):
    """tread_config: SimpleTuner's TREAD token routing, {"routes": [...]}."""

    model_config = _MODEL_CONFIG
    routes: list[TreadRoute] = Field(min_length=1, description="The spans tokens are routed past.")


class TrainConfig(BaseModel):
    """config.json: what to train, how, and how to watch it (SimpleTuner's key names)."""

    model_config = _MODEL_CONFIG

    # --- model -------------------------------------------------------------------------------
    model_family: str = Field("sana", description="Model family to train: one of the family cards (sana, sanavideo, sd3).")
    model_type: Literal["full", "lora"] = Field(
        "lora", description="Train every weight (full) or a small adapter on a frozen base (lora).")
    pretrained_model_name_or_path: Optional[str] = Field(
        None, description="Hugging Face repo id or local diffusers folder of the base model (unset: the family's default).")
    pretrained_vae_model_name_or_path: Optional[str] = Field(
        None, description="Repo id or folder of the VAE (unset: the base model's own VAE).")
    output_dir: str = Field("output", description="Folder for checkpoints, validation images and the final model.")
    lora_type: Literal["standard", "lycoris"] = Field(
        "standard", description="Adapter kind: standard (PEFT LoRA) or lycoris (LoKr by default).")
    lora_rank: int = Field(16, ge=1, description="Adapter rank: larger learns more and uses more memory.")
    lora_alpha: Optional[float] = Field(None, gt=0, description="LoRA scaling alpha (unset: equal to lora_rank).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA layers during training.")
    lycoris_config: Optional[str] = Field(
        None, description="JSON file with the LyCORIS settings (unset: LoKr with tuner's defaults).")
    peft_lora_target_modules: Optional[list[str]] = Field(
        None, description="Module names standard LoRA wraps (unset: the attention projections of the family).")

    # --- batches, length ---------------------------------------------------------------------
    train_batch_size: int = Field(1, ge=1, description="Images (or videos) per GPU per step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps whose gradients are summed before each optimizer update.")
    vae_batch_size: int = Field(4, ge=1, description="Images encoded at once while filling the latent cache.")
    max_train_steps: int = Field(0, ge=0, description="Optimizer steps to train (0: use num_train_epochs).")
    num_train_epochs: int = Field(1, ge=0, description="Passes over the data (used when max_train_steps is 0).")
    ignore_final_epochs: bool = Field(False, description="Stop at max_train_steps even when epochs remain.")

    # --- optimisation ------------------------------------------------------------------------
    learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate (Sana full-rank: ~1e-5; LoRA/LoKr: ~1e-4).")
    lr_scheduler: SchedulerName = Field("constant", description="How the learning rate changes over the run.")
    lr_warmup_steps: int = Field(0, ge=0, description="Steps over which the learning rate rises from 0 to learning_rate.")
    lr_end: float = Field(4e-7, ge=0, description="Final learning rate of the polynomial scheduler.")
    lr_num_cycles: int = Field(1, ge=1, description="Number of restarts for cosine_with_restarts.")
    lr_power: float = Field(0.8, gt=0, description="Power of the polynomial scheduler's decay.")
    optimizer: OptimizerName = Field("adamw_bf16", description="Optimizer (adamw_bf16 needs mixed_precision bf16).")
    optimizer_config: Optional[dict[str, Any]] = Field(
        None, description='Extra optimizer settings, as "key=value,key=value" or a JSON object.')
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW first-moment decay.")
    adam_beta2: float = Field(0.999, ge=0, lt=1, description="AdamW second-moment decay.")
    adam_weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay.")
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    max_grad_norm: float = Field(2.0, ge=0, description="Gradient clipping threshold (0: no clipping).")
    grad_clip_method: Literal["norm", "value"] = Field(
        "value", description="Clip the gradient's total norm (norm) or each value (value).")
    max_nan_steps: int = Field(5, ge=1, description="Consecutive non-finite losses before the run stops.")
    stall_timeout_minutes: float = Field(
        15.0, ge=0, description="tunerd marks the job stalled after this long without an event (4x while "
        "loading, caching, saving or validating); 0: never.")
    stall_action: Literal["warn", "stop"] = Field(
        "warn", description="What tunerd does with a stalled job: warn (mark it), or stop (end it, resumable).")
    process_group_timeout_minutes: float = Field(
        180.0, gt=0, description="Multi-GPU: how long a process waits for the others (the main one fills the caches "
        "and validates alone) before the run fails; NCCL's own default is 10.")

    # --- precision, memory -------------------------------------------------------------------
    mixed_precision: Literal["bf16", "fp16", "no"] = Field(
        "bf16", description="Training precision: bf16 (recommended), fp16, or no (fp32, e.g. on a Mac).")
    base_model_precision: Precision = Field(
        "no_change",
        description="Quantise the frozen base model to save memory (LoRA only); bf16/fp16/fp32 mean no quantisation.")
    text_encoder_1_precision: Precision = Field("no_change", description="Quantisation of the first text encoder.")
    text_encoder_2_precision: Precision = Field("no_change", description="Quantisation of the second text encoder.")
    text_encoder_3_precision: Precision = Field("no_change", description="Quantisation of the third text encoder (SD3's T5).")
    quantize_via: Literal["cpu", "accelerator"] = Field(
        "accelerator", description="Where weights are quantised: cpu is slower but fits 16 GB cards.")
    vae_dtype: Literal["default", "fp16", "fp32", "bf16"] = Field(
        "default", description="VAE precision (default: the family's choice; Sana keeps fp32).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass to save memory.")
    gradient_checkpointing_interval: Optional[int] = Field(
        None, ge=1, description="Checkpoint only every N-th block (2 = half the blocks; needs gradient_checkpointing).")
    enable_group_offload: bool = Field(False, description="Keep transformer blocks in RAM and move them to the GPU in groups.")
    group_offload_type: Literal["block_level", "leaf_level"] = Field(
        "block_level", description="Offload whole blocks (block_level) or single layers (leaf_level).")
    group_offload_blocks_per_group: int = Field(1, ge=1, description="Blocks moved together with block_level offload.")
    group_offload_use_stream: bool = Field(False, description="Overlap offload transfers with compute (CUDA only).")
    group_offload_to_disk_path: Optional[str] = Field(None, description="Offload to this folder on disk instead of RAM.")
    torch_num_threads: Optional[int] = Field(
        None, ge=1, description="CPU threads for training on the CPU (unset: follow the cores other programs leave free).")
    enable_model_cpu_offload: bool = Field(False, description="Move whole models to the CPU when idle (not with group offload).")
    attention_mechanism: Literal["diffusers", "xformers", "sageattention", "sageattention-int8-fp16-triton",
                                 "sageattention-int8-fp16-cuda", "sageattention-int8-fp8-cuda"] = Field(
        "diffusers", description="Attention kernel: diffusers (PyTorch SDPA); SimpleTuner's others are accepted and warned about.")

    # --- compile and matmul precision (SimpleTuner's names) ----------------------------------
    dynamo_backend: Literal["no", "inductor", "eager", "aot_eager", "cudagraphs"] = Field(
        "no", description="torch.compile the transformer with this backend (no: run eagerly).")
    dynamo_mode: Optional[Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]] = Field(
        None, description="torch.compile's mode (unset: its default).")
    dynamo_use_regional_compilation: bool = Field(
        True, description="Compile each transformer block once and reuse it (fast to compile); false: the whole model.")
    dynamo_fullgraph: bool = Field(False, description="Fail instead of splitting the compiled graph where it breaks.")
    dynamo_dynamic: Optional[bool] = Field(
        None, description="Compile for changing shapes (aspect buckets) at once (unset: after the first change).")
    disable_tf32: bool = Field(False, description="Keep fp32 matmuls in full fp32 on NVIDIA GPUs (default: TF32).")

    tread_config: Optional[TreadConfig] = Field(
        None, description='TREAD token routing in training: {"routes": [{"selection_ratio": 0.5, '
                          '"start_layer_idx": 2, "end_layer_idx": -2}]} (unset: every token through every block).')

    # --- several processes: FSDP2 (SimpleTuner's names) --------------------------------------
    fsdp_enable: bool = Field(False, description="Shard full-rank training over the processes with torch FSDP2 "
                              "(each keeps 1/N of weights, gradients, optimizer state and EMA).")
    fsdp_version: Literal[2] = Field(2, description="FSDP version: 2 (torch's fully_shard); FSDP1 is not offered.")
    fsdp_reshard_after_forward: bool = Field(
        True, description="Free each block's gathered weights after its forward (less memory, one more gather in the backward).")
    fsdp_transformer_layer_cls_to_wrap: Optional[Union[str, list[str]]] = Field(
        None, description="Module classes sharded one by one (default: the family's transformer blocks).")
    fsdp_activation_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass under FSDP (the same as gradient_checkpointing).")
    fsdp_state_dict_type: Literal["SHARDED_STATE_DICT", "FULL_STATE_DICT"] = Field(
        "SHARDED_STATE_DICT", description="Checkpoints hold the sharded state (loadable on any process count); "
        "FULL_STATE_DICT is accepted and warned about. The export is always a full diffusers folder.")
    fsdp_cpu_ram_efficient_loading: bool = Field(
        False, description="Under fsdp_enable, only the main process reads the base weights; the others start "
        "empty and receive their shards from it (one copy in RAM instead of one per process).")

    # --- EMA ---------------------------------------------------------------------------------
    use_ema: bool = Field(False, description="Keep an exponential moving average of the weights.")
    ema_decay: float = Field(0.995, gt=0, lt=1, description="EMA decay per update: closer to 1 averages longer.")
    ema_device: Literal["cpu", "accelerator"] = Field(
        "accelerator", description="Where the main process keeps the fp32 EMA weights: accelerator (fastest), or cpu "
        "(RAM, updated beside the next step) when the GPU has no room for them.")
    ema_update_interval: Optional[int] = Field(None, ge=1, description="Update the EMA every N steps (unset: every step).")
    ema_validation: Literal["none", "ema_only", "comparison"] = Field(
        "comparison", description="Validate with the EMA weights (ema_only), both (comparison) or neither (none).")

    # --- data --------------------------------------------------------------------------------
    data_backend_config: Optional[str] = Field(
        None, description="The datasets file (unset: multidatabackend.json next to config.json).")
    resolution: float = Field(1024, gt=0, description="Training size: pixels, or megapixels when resolution_type is area.")
    resolution_type: ResolutionType = Field(
        "pixel_area", description="pixel: shorter edge; area: megapixels; pixel_area: area given as an edge length.")
    caption_dropout_probability: float = Field(
        0.0, ge=0, le=1, description="Share of steps trained with an empty caption (helps guidance).")
    vae_cache_disable: bool = Field(False, description="Encode latents on the fly instead of caching them on disk.")
    compress_disk_cache: bool = Field(False, description="Compress the latent and text-embed caches on disk.")
    delete_problematic_images: bool = Field(False, description="Delete images that fail to load instead of skipping them.")
    t5_padding: Literal["zero", "unmodified"] = Field(
        "unmodified", description="SD3: zero the T5 padding tokens (zero) or keep them (unmodified).")
    sd3_clip_uncond_behaviour: Literal["empty_string", "zero"] = Field(
        "empty_string", description="SD3: CLIP embedding for dropped captions: an empty prompt or zeros.")
    sd3_t5_uncond_behaviour: Literal["empty_string", "zero"] = Field(
        "empty_string", description="SD3: T5 embedding for dropped captions: an empty prompt or zeros.")
    tokenizer_max_length: Optional[int] = Field(
        None, ge=1, description="Text tokens per prompt (unset: Sana 300, SD3 T5 154).")
    sana_complex_human_instruction: Optional[list[str]] = Field(
        None, description="Sana: lines prepended to every prompt before Gemma encodes it (unset: the model's own; [] turns it off).")

    # --- noise schedule ----------------------------------------------------------------------
    flow_schedule_shift: float = Field(
        3.0, ge=0, description="Timestep shift: ~0.1 trains fine detail, ~4 composition and colour (not sanavideo).")
    flow_schedule_auto_shift: bool = Field(False, description="Shift by image size instead of flow_schedule_shift (not sanavideo).")
    flow_use_uniform_schedule: bool = Field(False, description="Sample timesteps uniformly instead of the sigmoid schedule.")
    flow_sigmoid_scale: float = Field(1.0, gt=0, description="Spread of the sigmoid timestep distribution.")
    noise_offset: float = Field(0.0, ge=0, description="Offset noise strength (0: off).")

    # --- CREPA (video) -----------------------------------------------------------------------
    crepa_enabled: bool = Field(False, description="Sana Video: CREPA temporal regulariser against flicker.")
    crepa_block_index: int = Field(10, ge=0, description="Transformer block whose features CREPA aligns.")
    crepa_lambda: float = Field(0.5, ge=0, description="Weight of the CREPA loss.")
    crepa_adjacent_distance: int = Field(1, ge=1, description="How many neighbouring frames CREPA compares.")
    crepa_adjacent_tau: float = Field(1.0, gt=0, description="Temporal decay of the neighbour weights.")
    crepa_encoder: Literal["dinov2_vitg14", "dinov2_vitl14", "dinov2_vitb14", "dinov2_vits14"] = Field(
        "dinov2_vitg14", description="Frozen image encoder CREPA aligns to (dinov2_vits14 is the small one).")
    crepa_encoder_image_size: int = Field(518, ge=14, description="Input size of the CREPA encoder (518 for vitg14, 224 for vits14).")

    # --- checkpoints -------------------------------------------------------------------------
    seed: Optional[int] = Field(None, description="Random seed for a repeatable run (unset: random).")
    resume_from_checkpoint: Optional[str] = Field(
        None, description='Resume from "latest" or a checkpoint folder (unset: start fresh).')
    checkpoint_step_interval: Optional[int] = Field(500, ge=0, description="Save a checkpoint every N steps (0: only when stopping and at the end).")
    checkpoints_total_limit: Optional[int] = Field(
        None, ge=1, description="Keep at most this many checkpoints (unset: keep all).")

    # --- validation --------------------------------------------------------------------------
    validation_disable: bool = Field(False, description="Never generate validation samples.")
    validation_prompt: Optional[str] = Field(None, description="Prompt sampled at every validation.")
    validation_negative_prompt: str = Field(
        "blurry, cropped, ugly", description="Negative prompt for validation samples.")
    validation_resolution: Optional[str] = Field(
        None, description='Validation size(s): "1024", "1024x768" or "1024x1024,1280x768" (unset: the training size).')
    validation_guidance: float = Field(4.5, ge=0, description="Classifier-free guidance scale for validation.")
    validation_guidance_rescale: float = Field(0.0, ge=0, le=1, description="Guidance rescale (0: off).")
    validation_guidance_skip_layers: Optional[list[int]] = Field(
        None, description="SD3 skip-layer guidance: blocks to skip, e.g. [7, 8, 9].")
    validation_guidance_skip_layers_start: float = Field(0.01, ge=0, le=1, description="Skip-layer guidance starts at this fraction of the steps.")
    validation_guidance_skip_layers_stop: float = Field(0.2, ge=0, le=1, description="Skip-layer guidance stops at this fraction of the steps.")
    validation_guidance_skip_scale: float = Field(2.8, ge=0, description="Skip-layer guidance scale (double it per extra skipped layer).")
    validation_num_inference_steps: int = Field(30, ge=1, description="Denoising steps per validation sample.")
    validation_seed: Optional[int] = Field(42, description="Seed for validation samples, fixed so they compare across steps.")
    validation_step_interval: Optional[int] = Field(100, ge=0, description="Validate every N steps (0: only at the end).")
    num_validation_images: int = Field(1, ge=1, description="Samples per validation prompt.")
    validation_num_video_frames: Optional[int] = Field(
        None, ge=1, description="Frames per validation video (Sana Video; unset: 81).")
    validation_preview: bool = Field(False, description="Show preview frames while a validation sample is generated.")
    validation_preview_steps: int = Field(1, ge=1, description="Decode a preview every N denoising steps.")
    user_prompt_library: Optional[str] = Field(
        None, description="JSON file of {nickname: prompt} sampled at each validation (unset: user_prompt_library.json next to config.json).")
    validation_prompt_library: bool = Field(False, description="Also sample the built-in prompt library.")
    framerate: Optional[int] = Field(None, ge=1, description="Frames per second of validation videos (unset: 16).")

    # --- trackers, hub -----------------------------------------------------------------------
    report_to: str = Field(
        "none", description="Trackers besides tuner's own log: tensorboard, wandb, both comma-separated, all, or none.")
    tracker_project_name: str = Field("tuner", description="Project name in the tracker.")
    tracker_run_name: Optional[str] = Field(None, description="Run name in the tracker (unset: the output folder's name).")
    push_to_hub: bool = Field(False, description="Upload the final model to the Hugging Face Hub with a model card.")
    hub_model_id: Optional[str] = Field(None, description="Hub repo to push to (unset: the output folder's name).")
    push_checkpoints_to_hub: bool = Field(
        False, description="With push_to_hub, also upload each checkpoint (into checkpoint-<step>/ of the repo).")

    @field_validator("base_model_precision", "text_encoder_1_precision", "text_encoder_2_precision",
                     "text_encoder_3_precision", mode="before")
    @classmethod
    def _plain_precision(cls, value: Any) -> Any:
        # SimpleTuner's quickstarts write the plain dtypes: each means "not quantised".
        if isinstance(value, str) and value.strip().lower() in PLAIN_PRECISIONS:
            return "no_change"
        return value

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> Any:
        # SimpleTuner takes one name or several comma-separated; a JSON list is the same.
        items = split_list(str(value)) if isinstance(value, (str, int, float)) else value
        if items is None:
            return "none"
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            return value  # not a string: pydantic names the type it expected
        names = [i.strip().lower() for i in items if i.strip()]
        unknown = [n for n in names if n not in REPORT_TO]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a tracker tuner reports to; allowed values: "
                             f"{', '.join(REPORT_TO)} (several comma-separated, e.g. \"tensorboard,wandb\")")
        if "none" in names and len(set(names)) > 1:
            raise ValueError("none cannot be combined with a tracker; give the trackers, or none alone")
        return ",".join(dict.fromkeys(names)) or "none"

    @field_validator("model_family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        if value not in families.names():
            raise ValueError(f"allowed values: {', '.join(families.names())}")
        return value

    @field_validator("tread_config", mode="before")
    @classmethod
    def _tread_config(cls, value: Any) -> Any:
        if isinstance(value, str):   # SimpleTuner's command line gives it as a JSON string
            text = value.strip()
            return None if not text or text.lower() in ("none", "null") else json.loads(text)
        return value

    @field_validator("optimizer_config", mode="before")
    @classmethod
    def _optimizer_config(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text or text.lower() in ("none", "null"):
                return None
            if text.startswith("{"):
                return json.loads(text)
            return parse_key_values(text)
        return value

    @field_validator("validation_guidance_skip_layers", "peft_lora_target_modules", mode="before")
    @classmethod
    def _skip_layers(cls, value: Any) -> Any:
        return split_list(value)

    @field_validator("sana_complex_human_instruction", mode="before")
    @classmethod
    def _instruction_lines(cls, value: Any) -> Any:
        # SimpleTuner takes it as one string; a JSON list or lines of text both work here.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [] if text.lower() in ("", "none", "false") else text.splitlines()
        return value

    @field_validator("validation_resolution", mode="before")
    @classmethod
    def _validation_resolution(cls, value: Any) -> Any:
        if value is None:
            return None
        parse_resolutions(value)
        return str(value).strip()

    @field_validator("max_train_steps", mode="before")
    @classmethod
    def _max_steps(cls, value: Any) -> Any:
        # SimpleTuner writes null (or "None") for "derive from epochs".
        return 0 if value is None else value

    def base_model(self) -> str:
        """The base checkpoint to load: the configured one or the family's default."""
        return self.pretrained_model_name_or_path or self.family.default_model

    @property
    def family(self) -> families.FamilyCard:
        """The card of model_family (validated on construction)."""
        return families.card(self.model_family)

    def resolution_of(self, dataset: DatasetConfig | None = None) -> Resolution:
        """A dataset's training size: its own resolution and resolution_type, else config.json's."""
        if dataset is None:
            return Resolution(float(self.resolution), self.resolution_type)
        return Resolution(float(dataset.resolution or self.resolution),
                          dataset.resolution_type or self.resolution_type)

    def validation_resolutions(self) -> list[tuple[int, int]]:
        """Validation sizes as (width, height); unset means a square of the training size."""
        if self.validation_resolution:
            return parse_resolutions(self.validation_resolution)
        side = self.resolution_of().edge
        return [(side, side)]


class VideoConfig(BaseModel):
    """The `video` block of a video dataset: clip lengths and bucketing."""

    model_config = _MODEL_CONFIG

    num_frames: int = Field(81, ge=1, description="Frames per training clip.")
    min_frames: Optional[int] = Field(None, ge=1, description="Skip clips shorter than this (unset: num_frames).")
    max_frames: Optional[int] = Field(None, ge=1, description="Skip clips longer than this (unset: no limit).")
    is_i2v: bool = Field(False, description="Image-to-video: condition on the clip's first frame.")
    bucket_strategy: Literal["aspect_ratio", "resolution_frames"] = Field(
        "aspect_ratio", description="Group clips by aspect ratio, or by size and length (832x480@81).")
    frame_interval: Optional[int] = Field(None, ge=1, description="Round frame counts down to a multiple of this.")


class DatasetConfig(BaseModel):
    """One entry of multidatabackend.json: a folder of images or videos, or the text-embed cache."""

    model_config = _MODEL_CONFIG

    id: str = Field(..., min_length=1, description="Unique name of the dataset.")
    type: Literal["local"] = Field("local", description="Storage backend (local disk).")
    dataset_type: Literal["image", "video", "text_embeds"] = Field(
        "image", description="image, video, or text_embeds (where prompt embeddings are cached).")
    default: bool = Field(False, description="The text_embeds dataset used by default.")
    disabled: bool = Field(False, description="Leave this dataset out of the run.")
    instance_data_dir: Optional[str] = Field(None, description="Folder with the images or videos (and caption files).")
    cache_dir_vae: Optional[str] = Field(None, description="Folder for this dataset's latent cache.")
    cache_dir: Optional[str] = Field(None, description="Folder for the text-embed cache (text_embeds datasets).")
    write_batch_size: int = Field(128, ge=1, description="Cache entries written at once.")
    crop: bool = Field(False, description="Crop images to the bucket's aspect instead of resizing only.")
    crop_aspect: Literal["square", "preserve", "closest", "random"] = Field(
        "square", description="Aspect to crop to: square, preserve, closest bucket, or random bucket.")
    crop_aspect_buckets: Optional[list[float]] = Field(
        None, description="Aspect ratios allowed for closest/random cropping, e.g. [0.75, 1.0, 1.33].")
    crop_style: Literal["center", "random", "corner"] = Field("random", description="Where the crop is taken.")
    resolution: Optional[float] = Field(None, gt=0, description="Training size for this dataset (unset: config.json's).")
    resolution_type: Optional[ResolutionType] = Field(
        None, description="How resolution is measured (unset: config.json's).")
    minimum_image_size: Optional[float] = Field(None, ge=0, description="Skip images smaller than this (same unit as resolution).")
    maximum_image_size: Optional[float] = Field(None, gt=0, description="Downscale images larger than this first.")
    target_downsample_size: Optional[float] = Field(None, gt=0, description="Size large images are downscaled to before cropping.")
    caption_strategy: Literal["filename", "textfile", "instanceprompt"] = Field(
        "filename", description="Captions from the file name, a .txt next to each file, or instance_prompt.")
    instance_prompt: Optional[str] = Field(None, description="The caption for every file (caption_strategy instanceprompt).")
    metadata_backend: Literal["discovery"] = Field("discovery", description="How image sizes are found (discovery: scan the files).")
    repeats: int = Field(0, ge=0, description="Extra passes over this dataset per epoch (0: seen once).")
    is_regularisation_data: bool = Field(False, description="Regularisation images (kept from drifting, not learned).")
    skip_file_discovery: str = Field("", description='Skip scanning steps already done: any of "vae aspect text".')
    probability: float = Field(1.0, ge=0, description="Relative chance this dataset is sampled.")
    vae_cache_clear_each_epoch: bool = Field(False, description="Re-encode latents every epoch (random crops stay random).")
    video: Optional[VideoConfig] = Field(None, description="Clip settings (video datasets only).")

    @field_validator("crop_aspect_buckets", mode="before")
    @classmethod
    def _buckets(cls, value: Any) -> Any:
        return split_list(value)


# --------------------------------------------------------------------------------------------
# Bundle and field metadata
# --------------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    """A short, readable name for a field's type ("int", "float | None", "list[int]")."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "choice"
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def field_choices(annotation: Any) -> list[Any] | None:
    """The allowed values of a Literal field (also inside Optional), else None."""
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    for arg in typing.get_args(annotation):
        found = field_choices(arg)
        if found:
            return found
    return None


def field_info(model_cls: type[BaseModel], key: str) -> dict[str, Any]:
    """Description, default, choices and type of one config key, for the wizard and --help."""
    info = model_cls.model_fields[key]
    default = None if info.default is PydanticUndefined else info.default
    return {
        "description": info.description or "",
        "default": default,
        "choices": field_choices(info.annotation),
        "type": _type_name(info.annotation),
    }


