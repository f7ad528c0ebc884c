"""Which presets suit a machine (from tuner.engine.hardware.probe or describe), best first."""
from __future__ import annotations

from typing import Any

from .loader import Preset

FITS, TIGHT, NO_FIT = "fits", "tight", "does not fit"
_ORDER = {FITS: 0, TIGHT: 1, NO_FIT: 2}

# NVML reports a "24 GB" card as ~23.99 GiB and a "12 GB" one as ~11.99; 5 % of slack keeps a
# card in the tier it is sold as without letting a 20 GB card into the 24 GB tier.
TIER_SLACK = 0.95
# Less than 10 % headroom over the estimate: fragmentation or a desktop session can tip it over.
HEADROOM = 0.9


def estimated_gb(preset: Preset) -> float:
    """tuner.engine.vram's estimate of the preset's overlay when it names a model the estimator knows, else the header's."""
    from tuner.engine import vram

    source = preset.config.get("pretrained_model_name_or_path")
    if preset.gpus == 0 or not source or vram.known_model(source, preset.model_family) is None:
        return preset.estimated_vram_gb
    video = preset.dataset.get("video") or {}
    config = {"model_family": preset.model_family, "model_type": preset.model_type,
              **{k: preset.dataset[k] for k in ("resolution", "resolution_type") if k in preset.dataset},
              **({"num_frames": video["num_frames"]} if "num_frames" in video else {}), **preset.config}
    return round(vram.estimate(config, {"gpus": preset.gpus})["total_gb"], 1)


def _usable_gpus(preset: Preset, gpus: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # A run uses the biggest cards first (a 24 GB card next to a small display card, say).
    need = max(preset.gpus, 1)
    return sorted(gpus, key=lambda g: g["vram_total_gb"], reverse=True)[:need]


def assess(preset: Preset, hardware: dict[str, Any]) -> tuple[str, str]:
    """(fit, reason) for one preset on one machine; the reason is a sentence for the user."""
    gpus = hardware.get("gpus") or []
    if preset.gpus == 0:
        return FITS, "runs on the CPU (a GPU only makes it faster)"
    if not gpus:
        return NO_FIT, f"needs {preset.gpus} NVIDIA GPU(s) with {preset.min_vram_gb:g} GB; this machine has none"
    if len(gpus) < preset.gpus:
        return NO_FIT, f"needs {preset.gpus} GPUs; this machine has {len(gpus)}"
    used = _usable_gpus(preset, gpus)
    estimate = estimated_gb(preset)
    if preset.bf16_required and not all(g.get("bf16") for g in used):
        names = ", ".join(g["name"] for g in used if not g.get("bf16"))
        return NO_FIT, f"needs bf16 (compute capability 8.0+, Ampere or newer); {names} has none"
    total = min(g["vram_total_gb"] for g in used)
    free = min(g.get("vram_free_gb", g["vram_total_gb"]) for g in used)
    per_gpu = " per GPU" if preset.gpus > 1 else ""
    if total < preset.min_vram_gb * TIER_SLACK or estimate > total:
        return NO_FIT, (
            f"needs {preset.min_vram_gb:g} GB{per_gpu} (about {estimate:g} GB used); "
            f"the GPU has {total:.1f} GB"
        )
    ram = hardware.get("ram_total_gb")
    if estimate > free:
        return TIGHT, (
            f"needs about {estimate:g} GB{per_gpu} but only {free:.1f} of {total:.1f} GB is free "
            "now; close the programs holding GPU memory"
        )
    if estimate > HEADROOM * free:
        return TIGHT, (
            f"about {estimate:g} of {free:.1f} GB free{per_gpu}: under 10 % headroom; "
            "close other GPU programs or lower train_batch_size if it runs out of memory"
        )
    if preset.min_ram_gb is not None and ram is not None and ram < preset.min_ram_gb:
        return TIGHT, (
            f"fits the GPU, but wants about {preset.min_ram_gb:g} GB of system RAM and this machine has "
            f"{ram:.1f} GB; loading or quantising may swap or be killed"
        )
    return FITS, f"about {estimate:g} of {total:.1f} GB{per_gpu}"


def _demand(preset: Preset) -> tuple[int, float, float]:
    # How much machine a preset asks for: GPUs, then the VRAM tier, then the estimate (a bigger
    # batch, less quantisation).
    return (preset.gpus, preset.min_vram_gb, estimated_gb(preset))


def _key(item: tuple[Preset, str, str]) -> tuple:
    preset, fit, _ = item
    demand = _demand(preset)
    if fit == NO_FIT:
        # Among those that do not fit, the nearest miss is the useful one to see first.
        return (_ORDER[fit], demand, preset.name)
    # Among those that fit, the most demanding uses the machine best.
    return (_ORDER[fit], tuple(-x for x in demand), preset.name)


def rank_presets(presets: list[Preset], hardware: dict[str, Any]) -> list[tuple[Preset, str, str]]:
    """(preset, fit, reason) per preset: fits (most demanding first), then tight, then does not fit (nearest miss first)."""
    return sorted(((p, *assess(p, hardware)) for p in presets), key=_key)
