"""Quantising a frozen model (denoiser base or text encoder) as `*_precision` and `quantize_via` say.

- `int8-quanto`, `int4-quanto`, `int2-quanto`, `fp8-quanto`: optimum-quanto's quantize + freeze;
  peft LoRA and our LoKr wrap the resulting QLinear layers.
- `nf4-bnb`: every linear layer becomes bitsandbytes' Linear4bit(quant_type="nf4"), quantised when
  it is moved to its device. This in-place swap runs on CUDA and on bitsandbytes' CPU backend alike,
  so the same code is tested without a GPU (diffusers' BitsAndBytesConfig path refuses to load
  without one); `bnb_load_kwargs` gives that load-time path to families that prefer it on CUDA.
- `quantize_via: cpu` quantises on the CPU and moves the small result to the device (slower, but a
  ≤16 GB card never holds the unquantised weights); `accelerator` moves first and quantises there.
Layers that carry the input/output of the model (`proj_out`, embedders) stay in full precision:
they are small and quantising them costs the most quality.
"""
from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

QUANTO_WEIGHTS = {"int8-quanto": "qint8", "int4-quanto": "qint4", "int2-quanto": "qint2", "fp8-quanto": "qfloat8"}
PRECISIONS = ("no_change", *QUANTO_WEIGHTS, "nf4-bnb")
KEEP_FULL_PRECISION = ("proj_out", "*embed*", "lm_head", "*.lm_head")


def is_quantised(precision: str | None) -> bool:
    """Whether a `*_precision` value quantises the weights."""
    return bool(precision) and precision != "no_change"


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def quantize_model(model: nn.Module, precision: str | None, *, device: torch.device | str, via: str = "accelerator",
                   exclude: tuple[str, ...] = KEEP_FULL_PRECISION, key: str = "base_model_precision") -> nn.Module:
    """`model` frozen, quantised as `precision` and on `device`; `key` names the setting in errors."""
    device = torch.device(device)
    if not is_quantised(precision):
        return model.to(device)
    if precision not in PRECISIONS:
        raise ValueError(f"config.json: {key}: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if via not in ("cpu", "accelerator"):
        raise ValueError(f"config.json: quantize_via: {via!r}; use cpu or accelerator")
    model.requires_grad_(False)
    where = torch.device("cpu") if via == "cpu" else device
    model.to(where)
    if precision == "nf4-bnb":
        _swap_nf4(model, exclude, where)
    else:
        _quanto(model, QUANTO_WEIGHTS[precision], exclude, key)
    return model.to(device)


def _quanto(model: nn.Module, weights: str, exclude: tuple[str, ...], key: str) -> None:
    import optimum.quanto as quanto

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _excluded(n, exclude)]
    try:
        quanto.quantize(model, weights=getattr(quanto, weights), exclude=names or None)
    except (RuntimeError, ValueError) as exc:
        raise RuntimeError(f"config.json: {key}: optimum-quanto could not quantise to {weights} on this device "
                           f"({exc}); try int8-quanto, or quantize_via: cpu") from exc
    quanto.freeze(model)


def _swap_nf4(model: nn.Module, exclude: tuple[str, ...], device: torch.device) -> None:
    """Replace each linear layer by an nf4 Linear4bit computing in the layer's own dtype."""
    import bitsandbytes as bnb

    targets = [(n, m) for n, m in model.named_modules()
               if type(m) is nn.Linear and not _excluded(n, exclude)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        dtype = linear.weight.dtype
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              compute_dtype=dtype, quant_type="nf4", device="meta")
        q.weight = bnb.nn.Params4bit(linear.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        setattr(parent, child, q.to(device))


def bnb_load_kwargs(precision: str | None, compute_dtype: torch.dtype) -> dict[str, Any]:
    """`from_pretrained` kwargs for diffusers'/transformers' load-time nf4 (CUDA only), else {}."""
    if precision != "nf4-bnb" or not torch.cuda.is_available():
        return {}
    from diffusers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_compute_dtype=compute_dtype)}


def weight_bytes(model: nn.Module) -> int:
    """Bytes the model's weights and buffers take as stored (quantised tensors at their packed size)."""
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        inner = [getattr(tensor, a) for a in ("_data", "_scale", "_shift") if torch.is_tensor(getattr(tensor, a, None))]
        if inner:
            total += sum(t.numel() * t.element_size() for t in inner)
        else:
            total += tensor.numel() * tensor.element_size()
    return total
