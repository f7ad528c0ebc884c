"""Adapters on a frozen denoiser: peft LoRA and LyCORIS-style LoKr — build, save, reload, export.

Files written (all safetensors, no pickle):
- LoRA: `pytorch_lora_weights.safetensors` in diffusers' layout (keys `transformer.<module>.lora_A/
  lora_B.weight`, the LoraConfig as metadata), written by the family's `pipeline_class.save_lora_weights`
  so `pipeline.load_lora_weights(folder)` loads it; and `pytorch_lora_weights_comfyui.safetensors`
  in the kohya/OneTrainer layout ComfyUI maps for SD3/MMDiT: `lora_transformer_<module, dots as
  underscores>.lora_down.weight` (= lora_A), `.lora_up.weight` (= lora_B) and `.alpha`. ComfyUI's
  native `diffusion_model.` keys name a fused qkv projection, which diffusers' separate to_q/to_k/to_v
  do not have, so the per-projection kohya names are the layout its SD3 loader accepts unchanged.
- LoKr: `lycoris_weights.safetensors` with LyCORIS' key names (`lycoris_<module>.lokr_w1`,
  `.lokr_w2` or `.lokr_w2_a`/`.lokr_w2_b`, `.alpha` — ComfyUI's SD3 loader maps these too) and
  `lycoris_config.json` beside it, from which `load_lokr` rebuilds the same modules.

LoKr is our own small module rather than peft's LoKrConfig: peft reshapes the delta to the base
layer's weight shape (which breaks on 4-bit packed weights) and scales full-dimension factors by
alpha/dim, where LyCORIS uses 1.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuner.engine import families
from tuner.engine.config.lycoris import FULL_DIM, read_lycoris_config
from tuner.engine.vram import factorization  # torch-free, shared with the VRAM estimate

log = logging.getLogger(__name__)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
COMFY_WEIGHTS = "pytorch_lora_weights_comfyui.safetensors"
LOKR_WEIGHTS = "lycoris_weights.safetensors"
LOKR_CONFIG = "lycoris_config.json"
ADAPTER_NAME = "default"

def _matches(name: str, targets: list[str] | tuple[str, ...]) -> bool:
    """peft's rule: a target names the module itself or a dotted suffix of its path."""
    return any(name == t or name.endswith("." + t) for t in targets)


def _is_linear(module: nn.Module) -> bool:
    # quanto's QLinear and bitsandbytes' Linear4bit both subclass nn.Linear.
    return isinstance(module, nn.Linear)


# --- LoRA (peft) --------------------------------------------------------------------------------

def lora_targets(cfg: Any, family_name: str) -> list[str]:
    """The module names standard LoRA wraps: peft_lora_target_modules, else the family card's targets."""
    given = cfg.peft_lora_target_modules
    return list(given) if given else list(families.card(family_name).adapter_targets)


def add_lora(model: nn.Module, cfg: Any, family_name: str) -> nn.Module:
    """Freeze `model` and inject a peft LoRA (lora_rank, lora_alpha or rank, lora_dropout); only it trains."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(cfg, family_name)
    found = [n for n, m in model.named_modules() if _matches(n, targets) and _is_linear(m)]
    if not found:
        raise ValueError(f"config.json: peft_lora_target_modules: none of {targets} names a linear layer of the "
                         f"{family_name} transformer; give names such as {list(families.card(family_name).adapter_targets)}")
    rank = int(cfg.lora_rank)
    config = LoraConfig(r=rank, lora_alpha=float(cfg.lora_alpha or rank), lora_dropout=float(cfg.lora_dropout or 0.0),
                        target_modules=targets, init_lora_weights=True)
    model.requires_grad_(False)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    model._tuner_lora_config = config
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The LoRA weights with peft's adapter name taken out (`<module>.lora_A.weight`)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME).items()}


def to_comfyui(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """diffusers/peft LoRA keys → the kohya names ComfyUI's SD3 loader accepts (see module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        module, kind = key.rsplit(".lora_", 1)
        base = "lora_transformer_" + module.replace(".", "_")
        out[f"{base}.lora_down.weight" if kind.startswith("A") else f"{base}.lora_up.weight"] = tensor
        out[f"{base}.alpha"] = torch.tensor(float(alpha))
    return out


def export_lora(model: nn.Module, pipeline_class: type, folder: Path) -> list[Path]:
    """Write the diffusers file (loadable by pipeline_class.load_lora_weights) and the ComfyUI one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model._tuner_lora_config
    state = lora_state_dict(model)
    metadata = config.to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])
    pipeline_class.save_lora_weights(folder, transformer_lora_layers={k: v.cpu() for k, v in state.items()},
                                     transformer_lora_adapter_metadata=metadata)
    save_file({k: v.cpu() for k, v in to_comfyui(state, config.lora_alpha).items()}, str(folder / COMFY_WEIGHTS))
    return [folder / LORA_WEIGHTS, folder / COMFY_WEIGHTS]


# --- LoKr ----------------------------------------------------------------------------------------

class LoKrLinear(nn.Module):
    """A frozen linear layer plus kron(w1, w2) · scale, applied without building the full matrix."""

    def __init__(self, base: nn.Module, factor: int, dim: int, alpha: float, dropout: float = 0.0,
                 multiplier: float = 1.0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.base = base
        out_m, out_n = factorization(base.out_features, factor)
        in_m, in_n = factorization(base.in_features, factor)
        self.shape = (out_m, out_n, in_m, in_n)
        device = next(base.parameters()).device
        self.lokr_w1 = nn.Parameter(torch.empty(out_m, in_m, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lokr_w1, a=math.sqrt(5))
        # LyCORIS splits w2 only when the rank is below half its larger side; its zero init makes
        # the adapter start as the identity.
        self.full_w2 = dim >= max(out_n, in_n) / 2
        if self.full_w2:
            self.lokr_w2 = nn.Parameter(torch.zeros(out_n, in_n, device=device, dtype=dtype))
            alpha = dim  # both factors full: LyCORIS fixes the scale at 1
        else:
            self.lokr_w2_a = nn.Parameter(torch.empty(out_n, dim, device=device, dtype=dtype))
            nn.init.kaiming_uniform_(self.lokr_w2_a, a=math.sqrt(5))
            self.lokr_w2_b = nn.Parameter(torch.zeros(dim, in_n, device=device, dtype=dtype))
        self.register_buffer("alpha", torch.tensor(float(alpha)), persistent=False)
        self.scale = float(alpha) / dim
        self.multiplier = multiplier
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def w2(self) -> torch.Tensor:
        return self.lokr_w2 if self.full_w2 else self.lokr_w2_a @ self.lokr_w2_b

    def delta_weight(self) -> torch.Tensor:
        """The full weight update kron(w1, w2) · scale (for tests and merging)."""
        return torch.kron(self.lokr_w1, self.w2()) * (self.scale * self.multiplier)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base(x, *args, **kwargs)
        out_m, out_n, in_m, in_n = self.shape
        h = self.dropout(x).to(self.lokr_w1.dtype).reshape(*x.shape[:-1], in_m, in_n)
        # kron(A, B) · vec(X) = vec(A · X · Bᵀ) for row-major X of shape (in_m, in_n).
        h = self.lokr_w1 @ h @ self.w2().transpose(0, 1)
        return out + (h.reshape(*x.shape[:-1], out_m * out_n) * (self.scale * self.multiplier)).to(out.dtype)


def _lokr_targets(model: nn.Module, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Linear layers to wrap → their LoKr settings (module_algo_map may override factor per class)."""
    preset = config.get("apply_preset") or {}
    classes = list(preset.get("target_module") or [])
    names = list(preset.get("target_name") or config.get("target_modules") or [])
    algo_map = preset.get("module_algo_map") or {}
    found: dict[str, dict[str, Any]] = {}
    for parent_name, parent in model.named_modules():
        cls = type(parent).__name__
        if cls in classes:
            for child_name, child in parent.named_modules():
                if child_name and _is_linear(child) and not isinstance(child, LoKrLinear):
                    full = f"{parent_name}.{child_name}" if parent_name else child_name
                    found[full] = {**config, **algo_map.get(cls, {})}
    for name, module in model.named_modules():
        if names and _matches(name, names) and _is_linear(module):
            found.setdefault(name, dict(config))
    present = {type(m).__name__ for m in model.modules()}
    unused = [c for c in classes if c not in present] + [t for t in names if not any(_matches(n, [t]) for n in found)]
    if unused:
        # SimpleTuner's configs name FeedForward, which Sana's convolutional GLUMBConv is not.
        log.warning("lycoris_config: %s match no linear layer of this model and are ignored "
                    "(LoKr here wraps linear layers only)", unused)
    return {n: s for n, s in found.items() if not n.endswith(".base") and ".base." not in n}


def add_lokr(model: nn.Module, config: dict[str, Any], dtype: torch.dtype = torch.float32) -> nn.Module:
    """Freeze `model` and wrap its target linear layers in LoKrLinear; only the LoKr factors train."""
    targets = _lokr_targets(model, config)
    if not targets:
        raise ValueError("lycoris_config: apply_preset.target_module / target_name match no linear layer; "
                         "use e.g. {\"apply_preset\": {\"target_module\": [\"Attention\"]}}")
    model.requires_grad_(False)
    for name, settings in targets.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        dim = int(settings.get("linear_dim", FULL_DIM))
        alpha = float(settings.get("linear_alpha", 1) or dim)
        setattr(parent, child, LoKrLinear(getattr(parent, child), int(settings.get("factor", 16)), dim, alpha,
                                          float(settings.get("dropout", 0.0) or 0.0),
                                          float(settings.get("multiplier", 1.0)), dtype))
    model._tuner_lokr_config = config
    return model


def _lokr_modules(model: nn.Module) -> dict[str, LoKrLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoKrLinear)}


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """The frozen base model's own behaviour for a while: LoRA layers bypassed, LoKr deltas scaled to 0."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    lokr = list(_lokr_modules(model).values())
    multipliers = [m.multiplier for m in lokr]
    lora = [m for m in model.modules() if isinstance(m, BaseTunerLayer) and not m.disable_adapters]
    for m in lokr:
        m.multiplier = 0.0
    for m in lora:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m, multiplier in zip(lokr, multipliers):
            m.multiplier = multiplier
        for m in lora:
            m.enable_adapters(True)


def lokr_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoKr factors under LyCORIS' key names (`lycoris_<module>.lokr_w1`, ..., `.alpha`)."""
    out: dict[str, torch.Tensor] = {}
    for name, module in _lokr_modules(model).items():
        prefix = "lycoris_" + name.replace(".", "_")
        for pname, param in module.named_parameters(recurse=False):
            out[f"{prefix}.{pname}"] = param.detach().cpu().contiguous()
        out[f"{prefix}.alpha"] = module.alpha.detach().cpu().clone()
    return out


def save_lokr(model: nn.Module, folder: Path) -> list[Path]:
    """Write the LoKr weights and the lycoris_config they were built with."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lokr_state_dict(model), str(folder / LOKR_WEIGHTS), metadata={"format": "lycoris", "algo": "lokr"})
    (folder / LOKR_CONFIG).write_text(json.dumps(model._tuner_lokr_config, indent=2) + "\n")
    return [folder / LOKR_WEIGHTS, folder / LOKR_CONFIG]


def load_lokr(model: nn.Module, folder: Path) -> nn.Module:
    """Rebuild the LoKr modules from `folder`'s lycoris_config.json and load their saved weights."""
    folder = Path(folder)
    config = read_lycoris_config(folder / LOKR_CONFIG)
    state = load_file(str(folder / LOKR_WEIGHTS))
    first = next(p for k, p in state.items() if not k.endswith(".alpha"))
    add_lokr(model, config, dtype=first.dtype)
    modules = {"lycoris_" + n.replace(".", "_"): m for n, m in _lokr_modules(model).items()}
    missing = [k for k in modules if f"{k}.lokr_w1" not in state]
    if missing:
        raise ValueError(f"{folder / LOKR_WEIGHTS} does not match this model: no weights for {missing[0]} "
                         f"({len(missing)} modules missing); was it trained on another model or lycoris_config?")
    with torch.no_grad():
        for prefix, module in modules.items():
            for pname, param in module.named_parameters(recurse=False):
                param.copy_(state[f"{prefix}.{pname}"])
    return model
