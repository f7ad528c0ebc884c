"""Quantising a frozen model (denoiser base or text encoder) as `*_precision` and `quantize_via` say.

- `int8-quanto`, `int4-quanto`, `int2-quanto`, `fp8-quanto`: optimum-quanto, layer by layer
  (quantise, freeze); it has linear and 2-D convolution layers. peft LoRA and our LoKr wrap the
  resulting QLinear layers.
- `nf4-bnb`: every linear layer becomes bitsandbytes' Linear4bit(quant_type="nf4"); bitsandbytes has
  no 4-bit convolution, so Sana's feed-forward convolutions stay in the weight dtype. On CUDA with
  `quantize_via: accelerator` the denoiser is loaded this way by diffusers itself (`load_kwargs`:
  BitsAndBytesConfig); elsewhere the layers are swapped in place, which also runs on bitsandbytes'
  CPU backend, so the same code is tested without a GPU.
- Where the full-precision weights go: `quantize_via: cpu` quantises every layer on the CPU and
  moves only the quantised result to the device; `accelerator` moves one layer at a time to the
  device and quantises it there. Neither ever puts the whole unquantised model on the device, so a
  16 GB card can take SD3.5 Large (16 GB in bf16) quantised.
Layers that carry the input/output of the model (`proj_out`, embedders, the patch-embedding
convolution) stay in full precision: they are small and quantising them costs the most quality.
"""
from __future__ import annotations

import fnmatch
import subprocess
from typing import Any

import torch
from torch import nn

QUANTO_WEIGHTS = {"int8-quanto": "qint8", "int4-quanto": "qint4", "int2-quanto": "qint2", "fp8-quanto": "qfloat8"}
PRECISIONS = ("no_change", *QUANTO_WEIGHTS, "nf4-bnb")
KEEP_FULL_PRECISION = ("proj_out", "*embed*", "lm_head", "*.lm_head")
# The layer types each library quantises (quanto also has LayerNorm, but only for activations).
_QUANTO_LAYERS = (nn.Linear, nn.Conv2d)
_BNB_LAYERS = (nn.Linear,)


class QuantisationError(RuntimeError):
    """A base or text encoder could not be quantised; the message names the key and the way out."""


def is_quantised(precision: str | None) -> bool:
    """Whether a `*_precision` value quantises the weights."""
    return bool(precision) and precision != "no_change"


def _excluded(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def targets(model: nn.Module, precision: str, exclude: tuple[str, ...] = KEEP_FULL_PRECISION) -> list[str]:
    """Names of the layers `precision` quantises in `model` (exact types: a layer quantised already is no target)."""
    kinds = _BNB_LAYERS if precision == "nf4-bnb" else _QUANTO_LAYERS
    return [n for n, m in model.named_modules() if type(m) in kinds and n and not _excluded(n, exclude)]


def kept_full_precision(model: nn.Module, exclude: tuple[str, ...] = KEEP_FULL_PRECISION) -> list[str]:
    """Names of the linear layers `exclude` keeps in full precision (bitsandbytes' skip list)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and _excluded(n, exclude)]


def is_quantised_model(model: nn.Module) -> bool:
    """Whether `model` was quantised already: by quantize_model, or loaded quantised by diffusers."""
    return bool(getattr(model, "_tuner_precision", None) or getattr(model, "is_loaded_in_4bit", False)
                or getattr(model, "is_loaded_in_8bit", False))


def _move(module: nn.Module, device: torch.device) -> nn.Module:
    """Every move onto the target device goes through here (one boundary to reason about)."""
    return module.to(device)


def _replace(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)


def quantize_model(model: nn.Module, precision: str | None, *, device: torch.device | str, via: str = "accelerator",
                   exclude: tuple[str, ...] = KEEP_FULL_PRECISION, key: str = "base_model_precision") -> nn.Module:
    """`model` frozen, quantised as `precision` and on `device`; `key` names the setting in errors.

    `model` is expected on the CPU (as `from_pretrained` loads it). With via=cpu each layer is
    quantised there and only quantised layers, then the small rest, are moved; with via=accelerator
    one full-precision layer at a time is moved and quantised on the device. A model that is
    quantised already (diffusers' load-time nf4) is only moved.
    """
    device = torch.device(device)
    if not is_quantised(precision):
        return _move(model, device)
    if precision not in PRECISIONS:
        raise ValueError(f"config.json: {key}: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if via not in ("cpu", "accelerator"):
        raise ValueError(f"config.json: quantize_via: {via!r}; use cpu or accelerator")
    model.requires_grad_(False)
    if is_quantised_model(model):
        return _move(model, device)
    where = torch.device("cpu") if via == "cpu" else device
    for name in targets(model, precision, exclude):
        layer = model.get_submodule(name)
        if via != "cpu":
            layer = _move(layer, where)
        if precision == "nf4-bnb":
            quantised = _move(_nf4_layer(layer, where), device)
        else:
            quantised = _quanto_layer(layer, name, precision, where, device, key)
        _replace(model, name, quantised)
    model._tuner_precision = precision
    model.requires_grad_(False)  # quanto's freeze makes new Parameters, which default to trainable
    return _move(model, device)


def _quanto_layer(layer: nn.Module, name: str, precision: str, where: torch.device, device: torch.device,
                  key: str) -> nn.Module:
    """One layer as a frozen quanto layer on `device`, quantised on `where`."""
    import optimum.quanto as quanto
    from optimum.quanto.nn import quantize_module

    weights = QUANTO_WEIGHTS[precision]
    try:
        quantised = quantize_module(layer, weights=getattr(quanto, weights))
    except (RuntimeError, ValueError) as exc:
        raise QuantisationError(f"config.json: {key}: optimum-quanto could not quantise {name} to {weights} "
                                f"({exc}); try int8-quanto, or quantize_via: cpu") from exc
    quantised.name = name
    try:
        # Freezing packs the weights, and moving them to CUDA may pick a packed layout: both can
        # JIT-build quanto's CUDA extension (fp8 on Ampere+, int4 / int2 at some widths).
        quantised.freeze()
        return _move(quantised, device)
    except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as exc:
        if isinstance(exc, torch.OutOfMemoryError) or not extension_build_failed(exc):
            raise
        raise QuantisationError(compiler_message(key, precision, exc)) from exc


def extension_build_failed(exc: BaseException) -> bool:
    """Whether `exc` came from building or loading a JIT-compiled extension (torch's cpp_extension, quanto's kernels)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
            if "torch/utils/cpp_extension" in filename or "quanto/library/extensions" in filename:
                return True
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return False


def compiler_message(key: str, precision: str, exc: BaseException) -> str:
    """The error for a quanto precision whose CUDA kernels could not be built here."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"config.json: {key}: {precision} on this GPU uses optimum-quanto's CUDA kernels, which are compiled "
            f"on first use, and that build failed: the CUDA compiler (nvcc, from the CUDA toolkit) and ninja "
            f"(`pip install ninja`) must both be installed ({type(exc).__name__}: {first}). Install them, or set "
            f"{key}: int8-quanto or nf4-bnb, which need no compiler")


def _nf4_layer(linear: nn.Linear, where: torch.device) -> nn.Module:
    """An nf4 Linear4bit computing in the layer's own dtype, quantised on `where` (bitsandbytes quantises on the move)."""
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=linear.weight.dtype, quant_type="nf4", device="meta")
    q.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return q.to(where)


def load_kwargs(precision: str | None, via: str, device: torch.device | str, compute_dtype: torch.dtype,
                keep: list[str]) -> dict[str, Any]:
    """`from_pretrained` kwargs that load a diffusers denoiser already quantised onto a CUDA `device`
    (diffusers' BitsAndBytesConfig, nf4 with `keep` left in full precision), else {} (quantize_model after loading).

    Only nf4 on CUDA with quantize_via: accelerator goes this way: diffusers quantises each weight
    as it is moved to the GPU, so the unquantised model never sits there, and its Linear4bit layers
    are the ones quantize_model would have made. quanto bases and quantize_via: cpu load on the CPU.
    """
    device = torch.device(device)
    if precision != "nf4-bnb" or via != "accelerator" or device.type != "cuda":
        return {}
    from diffusers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                                bnb_4bit_use_double_quant=True,  # as Params4bit's default in the CPU swap
                                llm_int8_skip_modules=list(keep))
    return {"quantization_config": config, "device_map": {"": device}}


def quantised_layer_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of `model`'s quantised layers (quanto or bitsandbytes).

    They are frozen and loaded alike on every process, so DDP has nothing to broadcast or average
    in them; `ignore_in_ddp` tells it so rather than leaving its broadcast to cope with quantised
    tensor types (quanto's are tensor subclasses with their data and scales inside)."""
    if not is_quantised_model(model):
        return []
    if getattr(model, "_tuner_precision", "nf4-bnb") == "nf4-bnb":
        import bitsandbytes as bnb

        kind: type = bnb.nn.Linear4bit
    else:
        from optimum.quanto.nn import QModuleMixin

        kind = QModuleMixin
    names = []
    for layer_name, layer in model.named_modules():
        if isinstance(layer, kind):
            prefix = f"{layer_name}." if layer_name else ""
            names += [prefix + n for n, _ in layer.named_parameters(recurse=False)]
            names += [prefix + n for n, _ in layer.named_buffers(recurse=False)]
    return names


def ignore_in_ddp(model: nn.Module) -> list[str]:
    """Mark the quantised layers' tensors as ignored by DistributedDataParallel (its initial broadcast,
    buffer broadcasts and gradient buckets); returns their names. Call before the model is wrapped."""
    from torch.nn.parallel import DistributedDataParallel

    names = quantised_layer_tensors(model)
    if names:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return names


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
