"""`tuner merge ADAPTER --into BASE OUT`: fold a trained LoRA or LoKr into a full diffusers folder.

The result is an ordinary pipeline folder (`DiffusionPipeline.from_pretrained(OUT)`), for tools
and services that take no adapters. The base is loaded by diffusers from its model_index.json;
a LoRA goes through the pipeline's own `load_lora_weights` + `fuse_lora` (the same loader users
call), a LoKr through ours (`adapters.load_lokr`), whose delta is added to each wrapped layer's
weight. The transformer is saved in the dtype the base stores it in (bf16 for a hub id, as the
families publish) unless `dtype` says otherwise.
"""
from __future__ import annotations

import json
from pathlib import Path

from tuner.engine.adapters import LORA_WEIGHTS, LOKR_CONFIG, LOKR_WEIGHTS

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class MergeError(ValueError):
    """What is wrong with the merge's inputs, with what to give instead."""


def adapter_folder(path: Path) -> Path:
    """The folder holding the adapter's files: `path` itself, or a run's output_dir's pipeline/."""
    if not (path / LORA_WEIGHTS).is_file() and not (path / LOKR_WEIGHTS).is_file() and (path / "pipeline").is_dir():
        return path / "pipeline"
    return path


def run_base(adapter: Path) -> str | None:
    """The base model the run that wrote `adapter` trained on, from its output_dir's config.json."""
    for folder in (adapter, *adapter.parents[:2]):
        config = folder / "config.json"
        if config.is_file():
            try:
                return json.loads(config.read_text()).get("pretrained_model_name_or_path")
            except ValueError:
                return None
    return None


def adapter_kind(adapter: Path) -> str:
    """"lora" or "lokr", from the files in an adapter folder."""
    if (adapter / LORA_WEIGHTS).is_file():
        return "lora"
    if (adapter / LOKR_WEIGHTS).is_file() and (adapter / LOKR_CONFIG).is_file():
        return "lokr"
    raise MergeError(f"{adapter}: no {LORA_WEIGHTS} (a LoRA) and no {LOKR_WEIGHTS} with {LOKR_CONFIG} (a LoKr); "
                     "give the folder a run exported (its output_dir) or one of its checkpoint folders")


def _stored_dtype(base: Path):
    """The dtype of the first floating tensor the base's transformer stores."""
    import torch
    from safetensors import safe_open

    for file in sorted((base / "transformer").glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensor = f.get_slice(key)
                dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}.get(tensor.get_dtype())
                if dtype is not None:
                    return dtype
    return torch.float32


def merge(adapter: Path, base: str | Path, out: Path, dtype: str | None = None) -> Path:
    """Write the base pipeline (a folder or a hub id) with the adapter folded into its transformer
    to `out`; returns `out`."""
    import torch
    from diffusers import DiffusionPipeline

    adapter, out = adapter_folder(Path(adapter)), Path(out)
    kind = adapter_kind(adapter)
    local = Path(base).expanduser()
    if local.exists() or str(base).startswith((".", "/", "~")):
        if not (local / "model_index.json").is_file():
            raise MergeError(f"--into {base}: not a diffusers pipeline folder (no model_index.json); give the "
                             "base model's folder or its hub id")
        base = local
    if out.exists() and any(out.iterdir()):
        raise MergeError(f"{out} is not empty; give a new folder for the merged model")
    if dtype is not None and dtype not in DTYPES:
        raise MergeError(f"--dtype {dtype}: give one of {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, DTYPES[dtype]) if dtype else _stored_dtype(base) if isinstance(base, Path) \
        else torch.bfloat16
    pipe = DiffusionPipeline.from_pretrained(base, torch_dtype=torch_dtype)
    if kind == "lora":
        pipe.load_lora_weights(adapter, weight_name=LORA_WEIGHTS)  # named: offline, diffusers will not guess
        pipe.fuse_lora()
        pipe.unload_lora_weights()
    else:
        pipe.transformer = fold_lokr(pipe.transformer, adapter)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "merged_from.json").write_text(json.dumps(
        {"base": str(base.resolve() if isinstance(base, Path) else base), "adapter": str(adapter.resolve()), "kind": kind,
         "dtype": str(torch_dtype).removeprefix("torch.")}, indent=2) + "\n")
    return out


def fold_lokr(transformer, adapter: Path):
    """The transformer with the LoKr in `adapter` added to its weights and the wrappers removed."""
    import torch

    from tuner.engine.adapters import LoKrLinear, load_lokr

    dtype = next(transformer.parameters()).dtype
    transformer = load_lokr(transformer.float(), adapter)
    with torch.no_grad():
        for name, module in list(transformer.named_modules()):
            if isinstance(module, LoKrLinear):
                module.base.weight += module.delta_weight().to(module.base.weight.dtype)
                parent_name, _, child = name.rpartition(".")
                setattr(transformer.get_submodule(parent_name) if parent_name else transformer, child, module.base)
    return transformer.to(dtype)


def command(args) -> int:
    """`tuner merge ADAPTER [--into BASE] OUT`."""
    import sys

    adapter = Path(args.adapter).resolve()
    base = args.into or run_base(adapter)
    if not base:
        print(f"tuner merge: no --into given and no run config.json beside {adapter} names the base model; "
              "give --into BASE (a diffusers folder or hub id)", file=sys.stderr)
        return 1
    try:
        out = merge(adapter, base, Path(args.out).resolve(), args.dtype)
    except (MergeError, OSError) as exc:
        print(f"tuner merge: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}: {base} with {adapter_folder(adapter)} folded in; load it with "
          f"DiffusionPipeline.from_pretrained({str(out)!r})")
    return 0
