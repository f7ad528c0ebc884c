"""The README.md of an exported folder (pipeline, LoRA, LoKr): Hub metadata, the latest validation
samples as a gallery, the settings that shaped the weights, and how to load them. Torch-free, so
`tuner push` and tests can write and read cards without a model.
"""
from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from tuner.engine.config.lycoris import read_lycoris_config

if TYPE_CHECKING:
    from tuner.engine.config import ConfigBundle

CARD = "README.md"
GALLERY = "images"      # inside the exported folder, so the card's pictures travel (and upload) with it
# The adapter files engine/adapters.py writes (tests/test_model_card.py holds them equal).
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
COMFY_WEIGHTS = "pytorch_lora_weights_comfyui.safetensors"
LOKR_WEIGHTS = "lycoris_weights.safetensors"
LOKR_CONFIG = "lycoris_config.json"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class SampleFiles(Protocol):
    """What the card reads of one prompt's validation samples (train/metrics.py's Samples)."""

    nickname: str
    prompt: str
    paths: list[Path]
    stills: list[Path]


def kind_of(bundle: ConfigBundle) -> str:
    """full, lora or lokr: what the export folder holds."""
    cfg = bundle.train
    if cfg.model_type == "full":
        return "full"
    return "lokr" if cfg.lora_type == "lycoris" else "lora"


def hub_id(source: str | None) -> str | None:
    """`source` when it names a Hub repo (owner/name) rather than a folder on this machine."""
    if not source or Path(source).expanduser().exists() or not HUB_ID.match(source):
        return None
    return source


def write_card(folder: Path, bundle: ConfigBundle, *, pipeline_class: str, step: int,
               samples: Sequence[tuple[int, SampleFiles]] = (), ema: bool = False, processes: int = 1) -> Path:
    """Write folder/README.md, copying the samples' files into folder/images/; returns the card's path."""
    folder = Path(folder)
    cfg = bundle.train
    family = cfg.family
    kind = kind_of(bundle)
    base = cfg.pretrained_model_name_or_path or family.default_model
    gallery = _copy_gallery(folder, samples)
    instance_prompts = list(dict.fromkeys(ds.instance_prompt for ds in bundle.enabled_datasets if ds.instance_prompt))
    pipeline_tag = "text-to-video" if family.video else "text-to-image"

    meta: dict[str, Any] = {}
    if hub_id(base):
        meta["base_model"] = base
    meta["library_name"] = "diffusers"
    meta["pipeline_tag"] = pipeline_tag
    meta["tags"] = _tags(family.name, pipeline_tag, kind)
    if instance_prompts:
        meta["instance_prompt"] = instance_prompts[0]
    if gallery:
        meta["widget"] = [{"text": item["prompt"], "output": {"url": item["url"]}} for item in gallery]

    ref = cfg.hub_model_id or str(folder.resolve())
    what = {"full": "A full fine-tune", "lora": "A LoRA adapter", "lokr": "A LyCORIS LoKr adapter"}[kind]
    base_text = f"[{base}](https://huggingface.co/{base})" if hub_id(base) else f"`{base}`"
    lines = [f"# {cfg.hub_model_id or Path(bundle.resolve(cfg.output_dir)).name}", "",
             f"{what} of {base_text} ({family.label}), trained with tuner for {step} step{'s' if step != 1 else ''}."]
    if ema:
        lines += ["", f"These are the run's EMA weights (ema_decay {cfg.ema_decay:g})."]
    if instance_prompts:
        lines += ["", "Trained on the instance prompt" + ("s " if len(instance_prompts) > 1 else " ")
                  + ", ".join(f"`{p}`" for p in instance_prompts) + "; use it in your prompts."]
    example = (instance_prompts[:1] or [item["prompt"] for item in gallery][:1] or [cfg.validation_prompt or "..."])[0]
    usage = _usage(kind, pipeline_class, base, ref, family.video, folder, example)
    lines += ["", *_gallery_section(gallery, cfg), "", "## Use it", "", *usage]
    lines += ["", "## Training settings", "", *_settings(bundle, kind, folder, step, processes), ""]
    path = folder / CARD
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    path.write_text(f"---\n{front}---\n\n" + "\n".join(lines))
    return path


def front_matter(card: Path) -> dict[str, Any]:
    """The YAML metadata of a card (what the Hub reads)."""
    text = Path(card).read_text()
    if not text.startswith("---\n"):
        return {}
    return yaml.safe_load(text[4:text.index("\n---", 4)]) or {}


def _tags(family: str, pipeline_tag: str, kind: str) -> list[str]:
    tags = ["diffusers", pipeline_tag, family, "tuner"]
    if kind == "lora":
        tags += ["lora", "template:sd-lora"]
    elif kind == "lokr":
        tags += ["lycoris", "lokr", "template:sd-lora"]
    else:
        tags += ["full-finetune"]
    return tags


def _copy_gallery(folder: Path, samples: Sequence[tuple[int, SampleFiles]]) -> list[dict[str, Any]]:
    """Copy each sample (and a video's still strip) into folder/images/; the card links them relatively."""
    target = folder / GALLERY
    if target.exists():  # an earlier export's pictures, written by this module
        shutil.rmtree(target)
    gallery = []
    for step, sample in samples:
        for i, path in enumerate(sample.paths):
            if not Path(path).is_file():
                continue
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / Path(path).name)
            still = sample.stills[i] if i < len(sample.stills) and Path(sample.stills[i]).is_file() else None
            if still is not None:
                shutil.copy2(still, target / Path(still).name)
            gallery.append({"nickname": sample.nickname, "prompt": sample.prompt, "step": step,
                            "url": f"{GALLERY}/{Path(path).name}",
                            "picture": f"{GALLERY}/{Path(still).name}" if still else f"{GALLERY}/{Path(path).name}"})
    return gallery


def _gallery_section(gallery: list[dict[str, Any]], cfg: Any) -> list[str]:
    if not gallery:
        return ["## Samples", "", "No validation samples were made (validation is off, or no validation prompt "
                "was set)."]
    steps = sorted({item["step"] for item in gallery})
    lines = ["## Samples", "",
             f"Validation at step {', '.join(map(str, steps))}: {cfg.validation_num_inference_steps} sampling steps, "
             f"guidance {cfg.validation_guidance:g}, seed {cfg.validation_seed}.", "",
             "| prompt | sample |", "|---|---|"]
    for item in gallery:
        prompt = item["prompt"].replace("|", "\\|").replace("\n", " ")
        picture = f"![{item['nickname']}]({item['picture']})"
        if item["url"] != item["picture"]:  # a video: its still strip, linking to the clip
            picture = f"[{picture}]({item['url']})"
        lines.append(f"| **{item['nickname']}**: {prompt} | {picture} |")
    return lines


def _usage(kind: str, pipeline_class: str, base: str, ref: str, video: bool, folder: Path, example: str) -> list[str]:
    call = ('video = pipe(prompt).frames[0]\nexport_to_video(video, "sample.mp4", fps=16)' if video
            else 'image = pipe(prompt).images[0]\nimage.save("sample.png")')
    imports = "import torch\nfrom diffusers import " + pipeline_class + (
        "\nfrom diffusers.utils import export_to_video" if video else "")
    prompt = f"prompt = {json.dumps(example, ensure_ascii=False)}"
    if kind == "full":
        code = (f'{imports}\n\npipe = {pipeline_class}.from_pretrained("{ref}", torch_dtype=torch.bfloat16).to("cuda")\n'
                f'{prompt}\n{call}')
        return ["With diffusers (`pip install diffusers transformers accelerate`):", "", "```python", code, "```"]
    load = f'pipe = {pipeline_class}.from_pretrained("{base}", torch_dtype=torch.bfloat16).to("cuda")\n'
    if kind == "lora":
        code = f'{imports}\n\n{load}pipe.load_lora_weights("{ref}", weight_name="{LORA_WEIGHTS}")\n{prompt}\n{call}'
        comfy = COMFY_WEIGHTS if (folder / COMFY_WEIGHTS).is_file() else LORA_WEIGHTS
        return ["With diffusers:", "", "```python", code, "```", "",
                f"In ComfyUI: put `{comfy}` in `ComfyUI/models/loras/` and load it with a LoraLoaderModelOnly node "
                "on the base model."]
    local = Path(ref).is_absolute()
    fetch = "" if local else "\nfrom huggingface_hub import snapshot_download"
    where = f'folder = "{ref}"' if local else f'folder = snapshot_download("{ref}")'
    code = (f"{imports}{fetch}\nfrom tuner.engine.adapters import load_lokr\n\n{load}{where}\n"
            f"load_lokr(pipe.transformer, folder)  # {LOKR_CONFIG} says which layers; {LOKR_WEIGHTS} holds them\n"
            f"{prompt}\n{call}")
    return ["diffusers does not load LoKr itself; tuner's loader adds the adapter to the pipeline's transformer "
            "(with tuner installed beside diffusers):", "", "```python", code, "```", "",
            f"In ComfyUI: put `{LOKR_WEIGHTS}` (LyCORIS key names) in `ComfyUI/models/loras/` and load it with a "
            "LoraLoaderModelOnly node on the base model."]


def _settings(bundle: ConfigBundle, kind: str, folder: Path, step: int, processes: int) -> list[str]:
    cfg = bundle.train
    if kind == "full":
        training = "full-rank (every weight)"
    elif kind == "lora":
        training = f"LoRA rank {cfg.lora_rank}, alpha {cfg.lora_alpha if cfg.lora_alpha is not None else cfg.lora_rank:g}"
    else:
        lokr = read_lycoris_config(folder / LOKR_CONFIG if (folder / LOKR_CONFIG).is_file() else cfg.lycoris_config)
        training = (f"LoKr factor {lokr.get('factor')}, linear_dim {lokr.get('linear_dim')}, "
                    f"linear_alpha {lokr.get('linear_alpha')}")
    if kind != "full" and cfg.base_model_precision != "no_change":
        training += f" on a {cfg.base_model_precision} base"
    accum = cfg.gradient_accumulation_steps
    batch = f"{cfg.train_batch_size} per GPU × {accum} accumulation × {processes} GPU(s) = " \
            f"{cfg.train_batch_size * accum * processes}"
    lr = f"{cfg.learning_rate:g}, {cfg.lr_scheduler}" + (f", {cfg.lr_warmup_steps} warmup steps" if cfg.lr_warmup_steps else "")
    if cfg.family.fixed_schedule:
        shift = "the checkpoint's own flow shift"
    elif cfg.flow_schedule_auto_shift:
        shift = "resolution-dependent flow shift"
    else:
        shift = f"flow shift {cfg.flow_schedule_shift:g}"
    schedule = "uniform" if cfg.flow_use_uniform_schedule else f"logit-normal (scale {cfg.flow_sigmoid_scale:g})"
    resolution = cfg.resolution_of()
    rows = [
        ("training", training),
        ("steps", str(step)),
        ("batch", batch),
        ("learning rate", lr),
        ("optimizer", cfg.optimizer),
        ("mixed precision", cfg.mixed_precision),
        ("resolution", f"{resolution.value:g} ({resolution.unit})"),
        ("timesteps", f"{schedule}, {shift}"),
        ("caption dropout", f"{cfg.caption_dropout_probability:g}"),
        ("EMA", f"decay {cfg.ema_decay:g}" if cfg.use_ema else "off"),
        ("seed", str(cfg.seed) if cfg.seed is not None else "random"),
        ("datasets", ", ".join(ds.id for ds in bundle.enabled_datasets) or "-"),
    ]
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
