"""Cross-field rules: combinations of settings that cannot work together, each saying what to change.

Each rule reads a loaded bundle (and, when given, the hardware description from
tuner.engine.hardware.probe()) and yields Issues; run_rules collects them all.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tuner.engine import checkpoints, families, offload
from tuner.engine.config.bundle import ConfigBundle
from tuner.engine.config.issues import Issue, display
from tuner.engine.config.lycoris import lycoris_problems
from tuner.engine.config.models import QUANTISED_PRECISIONS, DatasetConfig
from tuner.engine.config.prompt_library import FALLBACK_SUBJECT, library_subject, validation_library

PRECISION_KEYS = ("base_model_precision", "text_encoder_1_precision", "text_encoder_2_precision",
                  "text_encoder_3_precision")
FP8_MIN_CAPABILITY = (8, 9)
BF16_MIN_CAPABILITY = (8, 0)
# Above this an "area" resolution is surely an edge length in pixels, not megapixels.
MAX_MEGAPIXELS = 16


@dataclass
class Context:
    """What every rule needs: the bundle, the hardware, and the file names to report."""

    bundle: ConfigBundle
    hardware: dict | None
    config_file: str
    datasets_file: str

    def config(self, level: str, key: str, message: str) -> Issue:
        return Issue(level, self.config_file, key, message)

    def dataset(self, level: str, ds: DatasetConfig, key: str, message: str) -> Issue:
        return Issue(level, self.datasets_file, f"{ds.id}.{key}" if key else ds.id, message)

    def is_set(self, key: str) -> bool:
        return key in self.bundle.train.model_fields_set

    @property
    def apple(self) -> bool:
        if self.hardware is None:
            return sys.platform == "darwin"
        name = str(self.hardware.get("platform", "")).lower()
        return "darwin" in name or "macos" in name or any(
            str(g.get("backend", "")).lower() == "mps" for g in self.hardware.get("gpus") or [])

    def gpus_below(self, capability: tuple[int, int]) -> list[tuple[str, tuple[int, ...]]]:
        """The described CUDA GPUs older than `capability`, as (name, capability)."""
        found = []
        for gpu in (self.hardware or {}).get("gpus") or []:
            cc = gpu.get("compute_capability")
            if cc and tuple(cc) < capability:
                found.append((str(gpu.get("name", "GPU")), tuple(cc)))
        return found


Rule = Callable[[Context], Iterator[Issue]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def run_rules(bundle: ConfigBundle, hardware: dict | None = None) -> list[Issue]:
    """Every cross-field problem in a loaded bundle, in rule order."""
    ctx = Context(bundle, hardware, display(bundle.config_path),
                  display(bundle.databackend_path) if bundle.databackend_path else "multidatabackend.json")
    return [issue for fn in RULES for issue in fn(ctx)]


# --------------------------------------------------------------------------------------------
# Model and training type
# --------------------------------------------------------------------------------------------


@rule
def family_is_chosen(ctx: Context) -> Iterator[Issue]:
    if not ctx.is_set("model_family"):
        choices = " or ".join(f'"{name}"' for name in families.names())
        yield ctx.config("error", "model_family", f"not set; add \"model_family\": {choices}")


@rule
def full_rank_is_not_quantised(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.model_type == "full" and cfg.base_model_precision in QUANTISED_PRECISIONS:
        yield ctx.config("error", "base_model_precision",
                         f"{cfg.base_model_precision} quantises the base model, which full-rank training cannot "
                         "update; set base_model_precision: no_change, or model_type: lora")


@rule
def family_allows_training_type(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    card = cfg.family
    if card.allows(cfg.model_type, cfg.lora_type):
        return
    if cfg.model_type == "full":
        yield ctx.config("error", "model_type", f"{card.label} does not train full-rank; set model_type: lora")
    elif not card.allows("lora", "lycoris") and not card.allows("lora", "standard"):
        yield ctx.config("error", "model_type", f"{card.label} trains full-rank only; set model_type: full")
    elif cfg.lora_type == "standard":
        yield ctx.config("error", "lora_type",
                         f"plain LoRA is not supported on {card.label}; set lora_type: lycoris (LoKr, lr ~1e-4)"
                         + (", or model_type: full" if "full" in card.training_types else ""))
    else:
        yield ctx.config("error", "lora_type", f"LyCORIS is not supported on {card.label}; set lora_type: standard")


@rule
def lycoris_settings(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if not cfg.lycoris_config:
        return
    if cfg.model_type != "lora" or cfg.lora_type != "lycoris":
        yield ctx.config("warning", "lycoris_config", "ignored: it applies only with model_type: lora and lora_type: lycoris")
    elif not ctx.bundle.resolve(cfg.lycoris_config).is_file():
        yield ctx.config("error", "lycoris_config",
                         f"{cfg.lycoris_config!r} not found (looked in {ctx.bundle.base_dir} and the config's "
                         "folder); fix the path, or remove the key for the default LoKr settings")
    else:
        path = ctx.bundle.resolve(cfg.lycoris_config)
        for key, message in lycoris_problems(path):
            yield Issue("error", display(path), key, message)


@rule
def attention_works(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.attention_mechanism.startswith("sageattention") and not cfg.family.sageattention:
        yield ctx.config("error", "attention_mechanism",
                         f"SageAttention does not support {cfg.family.label}'s head size; "
                         "set attention_mechanism: diffusers")


# --------------------------------------------------------------------------------------------
# Precision, optimizer, hardware
# --------------------------------------------------------------------------------------------


@rule
def bf16_optimizer_needs_bf16(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.optimizer == "adamw_bf16" and cfg.mixed_precision != "bf16":
        yield ctx.config("error", "optimizer",
                         f"adamw_bf16 trains bf16 weights but mixed_precision is {cfg.mixed_precision!r}; "
                         "set mixed_precision: bf16, or optimizer: adamw")


@rule
def fp8_is_supported(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    for key in PRECISION_KEYS:
        if getattr(cfg, key) != "fp8-quanto":
            continue
        if ctx.apple:
            yield ctx.config("error", key, "fp8-quanto does not run on Apple GPUs; use int8-quanto")
        for name, cc in ctx.gpus_below(FP8_MIN_CAPABILITY):
            yield ctx.config("error", key,
                             f"fp8-quanto needs compute capability 8.9 or newer (Ada, Hopper); {name} is "
                             f"{'.'.join(map(str, cc))}; use int8-quanto")
            break


@rule
def bitsandbytes_is_supported(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if not ctx.apple:
        return
    for key in PRECISION_KEYS:
        if getattr(cfg, key) == "nf4-bnb":
            yield ctx.config("error", key, "nf4-bnb (bitsandbytes) does not run on Apple GPUs; use int8-quanto or int4-quanto")
    if cfg.optimizer.startswith("bnb-"):
        yield ctx.config("error", "optimizer", f"{cfg.optimizer} (bitsandbytes) does not run on Apple GPUs; "
                         "use optimi-lion or adamw")


@rule
def bf16_is_supported(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.mixed_precision != "bf16":
        return
    for name, cc in ctx.gpus_below(BF16_MIN_CAPABILITY):
        yield ctx.config("error", "mixed_precision",
                         f"bf16 needs compute capability 8.0 or newer (Ampere); {name} is "
                         f"{'.'.join(map(str, cc))}; set mixed_precision: fp16 and optimizer: adamw")
        break


@rule
def offload_modes_exclusive(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.enable_group_offload and cfg.enable_model_cpu_offload:
        yield ctx.config("error", "enable_model_cpu_offload",
                         "cannot be used together with enable_group_offload; set one of them to false")


@rule
def group_offload_is_for_frozen_modules(ctx: Context) -> Iterator[Issue]:
    message = offload.training_warning(ctx.bundle.train)
    if message:
        yield ctx.config("warning", "enable_group_offload", message)


QUANTO_KERNELS = ("fp8-quanto", "int4-quanto", "int2-quanto")


@rule
def quanto_kernels_can_be_built(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    hardware = ctx.hardware or {}
    if hardware.get("platform") == "planned" or not hardware.get("gpus") or ctx.apple:
        return  # only the machine that trains can say whether it has the compiler
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    nvcc = shutil.which("nvcc") or (Path(cuda_home) / "bin" / "nvcc").is_file()
    missing = [tool for tool, found in (("nvcc", nvcc), ("ninja", shutil.which("ninja"))) if not found]
    if not missing:
        return
    for key in PRECISION_KEYS:
        value = getattr(cfg, key)
        if value in QUANTO_KERNELS:
            yield ctx.config("warning", key,
                             f"{value} on an NVIDIA GPU may compile optimum-quanto's CUDA kernels on first use, and "
                             f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed here, so "
                             "the run would stop while quantising; install the CUDA toolkit (nvcc) and ninja "
                             "(pip install ninja), or use int8-quanto or nf4-bnb, which need no compiler")


@rule
def checkpointing_interval_needs_checkpointing(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.gradient_checkpointing_interval and not cfg.gradient_checkpointing:
        yield ctx.config("warning", "gradient_checkpointing_interval",
                         "ignored without gradient_checkpointing: true; set it to use the interval")


# --------------------------------------------------------------------------------------------
# Schedule, length, checkpoints
# --------------------------------------------------------------------------------------------


@rule
def video_ignores_shift(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if not cfg.family.fixed_schedule:
        return
    for key in ("flow_schedule_shift", "flow_schedule_auto_shift"):
        if ctx.is_set(key):
            yield ctx.config("warning", key, f"ignored for {cfg.model_family}: the checkpoint's own flow-matching "
                             "schedule is used; remove the key")


@rule
def run_has_a_length(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.max_train_steps == 0 and cfg.num_train_epochs == 0:
        yield ctx.config("error", "max_train_steps",
                         "max_train_steps and num_train_epochs are both 0, so nothing would train; "
                         "set max_train_steps (e.g. 1000) or num_train_epochs (e.g. 10)")
    elif 0 < cfg.max_train_steps <= cfg.lr_warmup_steps:
        yield ctx.config("warning", "lr_warmup_steps",
                         f"warm-up ({cfg.lr_warmup_steps} steps) lasts the whole run ({cfg.max_train_steps} steps); "
                         "lower lr_warmup_steps")


@rule
def resume_point_exists(ctx: Context) -> Iterator[Issue]:
    value = ctx.bundle.train.resume_from_checkpoint
    if value and value != "latest" and not ctx.bundle.resolve(value).is_dir():
        yield ctx.config("error", "resume_from_checkpoint",
                         f"{value!r} is not a checkpoint folder; use \"latest\", a folder under output_dir, "
                         "or remove the key to start fresh")


@rule
def output_dir_is_a_folder(ctx: Context) -> Iterator[Issue]:
    value = ctx.bundle.train.output_dir
    if ctx.bundle.resolve(value).is_file():
        yield ctx.config("error", "output_dir", f"{value!r} is a file; choose a folder name")


@rule
def output_dir_holds_no_earlier_run(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    problem = checkpoints.earlier_run(ctx.bundle.resolve(cfg.output_dir), cfg.resume_from_checkpoint)
    if problem:
        yield ctx.config("error", "output_dir", problem)


@rule
def family_matches_model_folder(ctx: Context) -> Iterator[Issue]:
    source = ctx.bundle.train.pretrained_model_name_or_path
    problem = source and families.mismatch(ctx.bundle.train.family, ctx.bundle.resolve(source))
    if problem:
        yield ctx.config("error", "pretrained_model_name_or_path", problem)


@rule
def tread_fits_the_run(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.tread_config is None:
        return
    if cfg.crepa_enabled:
        yield ctx.config("error", "tread_config", "token routing and CREPA are not combined yet (CREPA aligns a "
                         "block's tokens, which routing thins out); turn one of them off")
    if cfg.dynamo_backend != "no":
        yield ctx.config("error", "tread_config", "token routing is not combined with torch.compile yet (the "
                         "routing hooks change the blocks' token counts); set dynamo_backend: no, or remove tread_config")


@rule
def area_resolution_is_megapixels(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.resolution_type == "area" and cfg.resolution > MAX_MEGAPIXELS:
        yield ctx.config("error", "resolution",
                         f"{cfg.resolution:g} with resolution_type area means {cfg.resolution:g} megapixels; "
                         "give megapixels (e.g. 1.0) or set resolution_type: pixel_area for an edge length")
    for ds in ctx.bundle.datasets:
        if ds.resolution is not None and cfg.resolution_of(ds).unit == "area" and ds.resolution > MAX_MEGAPIXELS:
            yield ctx.dataset("error", ds, "resolution",
                              f"{ds.resolution:g} with resolution_type area means {ds.resolution:g} megapixels; "
                              "give megapixels (e.g. 1.0) or set resolution_type: pixel_area")


# --------------------------------------------------------------------------------------------
# Settings tuner reads but cannot act on yet: said, never silently dropped
# --------------------------------------------------------------------------------------------

# key → what happens instead and what to do; warned when the key is set to anything but its default.
NOT_ACTING_YET = {
    "noise_offset": "not supported yet, no offset noise is added; remove the key",
    "validation_guidance_rescale": "not supported yet, guidance is not rescaled; remove the key",
    "enable_model_cpu_offload": "not supported yet: the validation models stay on the GPU; to save memory there, "
                                "lower validation_resolution (or validation_num_video_frames)",
    "fsdp_state_dict_type": "FULL_STATE_DICT is not offered: checkpoints hold the sharded state, which loads on "
                            "any number of processes, and the final export is a full diffusers folder anyway",
}
DATASET_NOT_ACTING_YET = {
    "write_batch_size": "ignored: each cache entry is written as its own file",
    "vae_cache_clear_each_epoch": "not supported yet: random crops are fixed per image and the cache is kept",
}
VIDEO_NOT_ACTING_YET = {
    "is_i2v": "trains image-to-video (each clip's first frame given clean, as diffusers' Sana Video i2v "
              "pipeline samples), but validation samples stay text-to-video: a conditioning image for them is "
              "not supported yet; load pipeline/ into SanaVideoImageToVideoPipeline to try it",
}


@rule
def fsdp_shards_full_rank_training(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if not cfg.fsdp_enable:
        for key in FSDP_SETTINGS:
            if ctx.is_set(key):
                yield ctx.config("warning", key, "has no effect without fsdp_enable: true")
        return
    if cfg.model_type != "full":
        yield ctx.config("error", "fsdp_enable", "FSDP shards full-rank training; an adapter is small enough for "
                         "every process to hold (multi-GPU adapters train with DDP): remove fsdp_enable")
    if cfg.enable_group_offload:
        yield ctx.config("error", "enable_group_offload", "cannot offload blocks FSDP shards; use one or the other")
    if cfg.crepa_enabled:
        yield ctx.config("error", "crepa_enabled", "CREPA's hooks and head are not sharded yet; turn CREPA off "
                         "under fsdp_enable, or train on one GPU per process with DDP (remove fsdp_enable)")


FSDP_SETTINGS = ("fsdp_reshard_after_forward", "fsdp_transformer_layer_cls_to_wrap", "fsdp_activation_checkpointing",
                 "fsdp_state_dict_type", "fsdp_cpu_ram_efficient_loading")


@rule
def checkpoint_uploads_need_the_hub(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.push_checkpoints_to_hub and not cfg.push_to_hub:
        yield ctx.config("warning", "push_checkpoints_to_hub",
                         "has no effect without push_to_hub: true (and hub_model_id); set them to upload")


@rule
def settings_not_acting_yet(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if ctx.is_set("ignore_final_epochs") and not cfg.ignore_final_epochs and cfg.max_train_steps:
        yield ctx.config("warning", "ignore_final_epochs",
                         "false has no effect: a run with max_train_steps stops there, whatever the epochs")
    for key, why in NOT_ACTING_YET.items():
        if ctx.is_set(key) and getattr(cfg, key) != type(cfg).model_fields[key].default:
            yield ctx.config("warning", key, why)
    sage_refused = cfg.attention_mechanism.startswith("sageattention") and not cfg.family.sageattention
    if cfg.attention_mechanism != "diffusers" and not sage_refused:
        yield ctx.config("warning", "attention_mechanism",
                         f"{cfg.attention_mechanism} is not supported yet; PyTorch's SDPA (diffusers) is used, which "
                         "picks FlashAttention or memory-efficient kernels on recent GPUs by itself")
    for ds in ctx.bundle.datasets:
        if ds.is_regularisation_data and cfg.model_type == "full" and not ds.disabled:
            yield ctx.dataset("warning", ds, "is_regularisation_data",
                              "full-rank training has no frozen base to preserve, so these images train like the "
                              "others; train an adapter (model_type: lora) for prior preservation")
        for key, why in DATASET_NOT_ACTING_YET.items():
            if key in ds.model_fields_set and getattr(ds, key) != type(ds).model_fields[key].default:
                yield ctx.dataset("warning", ds, key, why)
        for key, why in VIDEO_NOT_ACTING_YET.items() if ds.video is not None else ():
            if key in ds.video.model_fields_set and getattr(ds.video, key) != type(ds.video).model_fields[key].default:
                yield ctx.dataset("warning", ds, f"video.{key}", why)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@rule
def ema_validation_needs_ema(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if ctx.is_set("ema_validation") and cfg.ema_validation != "none" and not cfg.use_ema:
        yield ctx.config("warning", "ema_validation", "ignored without use_ema: true")


@rule
def video_frames_only_for_video(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    frames = cfg.validation_num_video_frames
    if frames is None:
        return
    if not cfg.family.video:
        yield ctx.config("error", "validation_num_video_frames",
                         f"{cfg.model_family} makes images, not videos; remove the key (or use model_family: "
                         f"{' or '.join(c.name for c in families.cards() if c.video)})")
    elif (frames - 1) % 4:
        yield ctx.config("warning", "validation_num_video_frames",
                         f"Sana Video makes 4k+1 frames; {frames} becomes {(frames - 1) // 4 * 4 + 1}; use e.g. 81")


@rule
def validation_has_prompts(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if not cfg.validation_disable and not cfg.validation_prompt and not validation_library(ctx.bundle):
        yield ctx.config("warning", "validation_prompt",
                         "no validation prompt and no prompt library, so no samples will be made; "
                         "set validation_prompt, or validation_disable: true")


@rule
def builtin_library_has_a_subject(ctx: Context) -> Iterator[Issue]:
    if ctx.bundle.train.validation_prompt_library and library_subject(ctx.bundle) is None:
        yield ctx.config("warning", "validation_prompt_library",
                         f"the built-in prompts are portraits of <token>, and no dataset has an instance_prompt to "
                         f"fill it, so they show {FALLBACK_SUBJECT!r}; set instance_prompt on a dataset (e.g. "
                         "\"sks woman\"), or write your own user_prompt_library")


@rule
def preview_steps_fit(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    if cfg.validation_preview and cfg.validation_preview_steps > cfg.validation_num_inference_steps:
        yield ctx.config("warning", "validation_preview_steps",
                         f"{cfg.validation_preview_steps} is more than validation_num_inference_steps "
                         f"({cfg.validation_num_inference_steps}), so only the final image is previewed; lower it")


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@rule
def dataset_ids_unique(ctx: Context) -> Iterator[Issue]:
    for ident, count in Counter(d.id for d in ctx.bundle.datasets).items():
        if count > 1:
            yield Issue("error", ctx.datasets_file, f"{ident}.id",
                        f"{count} datasets share the id {ident!r}; give each a unique id (it names its cache)")


@rule
def has_training_data(ctx: Context) -> Iterator[Issue]:
    enabled = ctx.bundle.enabled_datasets
    if not enabled:
        yield Issue("error", ctx.datasets_file, "dataset_type",
                    "no enabled image or video dataset; add one with instance_data_dir, or set disabled: false")
    elif all(d.probability == 0 for d in enabled):
        yield Issue("error", ctx.datasets_file, "probability",
                    "every enabled dataset has probability 0, so none is ever sampled; set one above 0")


@rule
def has_text_embed_cache(ctx: Context) -> Iterator[Issue]:
    embeds = [d for d in ctx.bundle.datasets if d.dataset_type == "text_embeds" and not d.disabled]
    defaults = [d for d in embeds if d.default]
    if not defaults:
        yield Issue("error", ctx.datasets_file, "default",
                    "no text_embeds dataset with default: true; add {\"id\": \"text-embeds\", \"dataset_type\": "
                    "\"text_embeds\", \"default\": true, \"cache_dir\": \"cache/text\"}"
                    + (f" or set default: true on {embeds[0].id!r}" if embeds else ""))
    elif len(defaults) > 1:
        yield Issue("error", ctx.datasets_file, "default",
                    f"{len(defaults)} text_embeds datasets have default: true "
                    f"({', '.join(d.id for d in defaults)}); keep it on one")


@rule
def dataset_fields_fit_type(ctx: Context) -> Iterator[Issue]:
    family = ctx.bundle.train.model_family
    for ds in ctx.bundle.datasets:
        if ds.video is not None and ds.dataset_type != "video":
            yield ctx.dataset("error", ds, "video",
                              f"a video block only applies to dataset_type: video (this is {ds.dataset_type!r}); "
                              "remove it or set dataset_type: video")
        if ds.dataset_type == "video" and not ds.disabled and not ctx.bundle.train.family.video:
            video = " or ".join(c.name for c in families.cards() if c.video)
            yield ctx.dataset("error", ds, "dataset_type",
                              f"{family} trains on images; video datasets need model_family: {video} "
                              "(or set disabled: true)")
        if ds.dataset_type in ("image", "video") and ds.caption_strategy == "instanceprompt" and not ds.instance_prompt:
            yield ctx.dataset("error", ds, "instance_prompt",
                              "caption_strategy instanceprompt needs an instance_prompt; add one "
                              "(e.g. \"a photo of sks dog\") or use caption_strategy: textfile")
        if ds.crop_aspect_buckets and ds.crop_aspect not in ("closest", "random"):
            yield ctx.dataset("warning", ds, "crop_aspect_buckets",
                              f"ignored with crop_aspect {ds.crop_aspect!r}; set crop_aspect: closest or random")


@rule
def data_dirs_exist(ctx: Context) -> Iterator[Issue]:
    for ds in ctx.bundle.datasets:
        if ds.disabled or ds.dataset_type == "text_embeds":
            continue
        if not ds.instance_data_dir:
            yield ctx.dataset("error", ds, "instance_data_dir",
                              f"not set; give the folder that holds this dataset's {ds.dataset_type}s")
            continue
        path = ctx.bundle.resolve(ds.instance_data_dir)
        if not path.is_dir():
            where = (str(path) if Path(ds.instance_data_dir).expanduser().is_absolute()
                     else f"{ctx.bundle.base_dir} and {ctx.bundle.config_path.parent}")
            yield ctx.dataset("error", ds, "instance_data_dir",
                              f"{ds.instance_data_dir!r} does not exist (looked in {where}); "
                              "fix the path, or set disabled: true")


@rule
def video_block_is_consistent(ctx: Context) -> Iterator[Issue]:
    for ds in ctx.bundle.datasets:
        video = ds.video
        if video is None or ds.dataset_type != "video":
            continue
        if video.min_frames and video.max_frames and video.min_frames > video.max_frames:
            yield ctx.dataset("error", ds, "video.min_frames",
                              f"min_frames {video.min_frames} is above max_frames {video.max_frames}; swap or fix them")
        if video.max_frames and video.num_frames > video.max_frames:
            yield ctx.dataset("error", ds, "video.num_frames",
                              f"num_frames {video.num_frames} is above max_frames {video.max_frames}; "
                              "lower num_frames or raise max_frames")
        if (video.num_frames - 1) % 4:
            yield ctx.dataset("warning", ds, "video.num_frames",
                              f"Sana Video encodes 4k+1 frames; {video.num_frames} is trimmed to "
                              f"{(video.num_frames - 1) // 4 * 4 + 1}; use e.g. 81")


@rule
def video_vae_matches(ctx: Context) -> Iterator[Issue]:
    cfg = ctx.bundle.train
    vae = cfg.pretrained_vae_model_name_or_path
    if cfg.family.vae_must_match_base and vae and vae != cfg.base_model():
        yield ctx.config("warning", "pretrained_vae_model_name_or_path",
                         f"{vae!r} differs from the base model {cfg.base_model()!r}; {cfg.family.label} needs its own "
                         "VAE, so remove the key or set it to the base model's path")
