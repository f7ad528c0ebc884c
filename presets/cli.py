"""`tuner presets [--family F] [--vram-gb X] [--gpus N] [--show NAME] [--json]`."""
from __future__ import annotations

import json
import sys
from typing import Any

from .loader import Preset, PresetError, list_presets, load_preset
from .ranking import FITS, TIGHT, rank_presets


def planned_hardware(vram_gb: float | None, gpus: int | None) -> dict[str, Any]:
    """The machine to rank for: this one, or one described by --vram-gb / --gpus."""
    from tuner.engine import hardware

    if vram_gb is None and gpus is None:
        return hardware.probe()
    if vram_gb is None:
        detected = hardware.probe()["gpus"]
        if not detected:
            raise ValueError("--gpus alone takes the VRAM from this machine's GPUs, and none was found; give --vram-gb too")
        vram_gb = min(g["vram_total_gb"] for g in detected)
    return hardware.describe(vram_gb, 1 if gpus is None else gpus)


def user_preset_errors(presets: list[Preset]) -> list[PresetError]:
    """Config-model errors in the user's own presets (the shipped ones are checked by the tests)."""
    from .overlay import check_preset

    return [
        PresetError(preset.path, issue.key, issue.message)
        for preset in presets if preset.source != "shipped"
        for issue in check_preset(preset) if issue.level == "error"
    ]


def preset_record(preset: Preset, fit: str, reason: str) -> dict[str, Any]:
    """One ranked preset as JSON: the header, the verdict and where the file is."""
    return {
        "name": preset.name,
        "description": preset.description,
        "model_family": preset.model_family,
        "model_type": preset.model_type,
        "fit": fit,
        "reason": reason,
        "min_vram_gb": preset.min_vram_gb,
        "gpus": preset.gpus,
        "bf16_required": preset.bf16_required,
        "estimated_vram_gb": preset.estimated_vram_gb,
        "min_ram_gb": preset.min_ram_gb,
        "notes": preset.notes,
        "source": preset.source,
        "path": str(preset.path),
    }


def command(args: Any) -> int:
    """Print the ranked presets (a table or JSON), or one preset's file with --show; 1 if a file is broken."""
    try:
        if getattr(args, "show", None):
            preset = load_preset(args.show)
            print(preset.path.read_text(encoding="utf-8"), end="")
            return 0
        hw = planned_hardware(getattr(args, "vram_gb", None), getattr(args, "gpus", None))
    except ValueError as exc:  # PresetError included: a bad --show name or file, or a bad plan
        print(f"error: {exc}", file=sys.stderr)
        return 2
    errors: list[PresetError] = []
    presets = list_presets(getattr(args, "family", None), errors=errors)
    errors += user_preset_errors(presets)
    ranked = rank_presets(presets, hw)
    if getattr(args, "json", False):
        print(json.dumps({
            "hardware": hw,
            "presets": [preset_record(*item) for item in ranked],
            "errors": [str(e) for e in errors],
        }, indent=2))
    else:
        _print_table(ranked, hw, errors)
    return 1 if errors else 0


def _print_table(ranked: list, hw: dict[str, Any], errors: list[PresetError]) -> None:
    from rich.console import Console
    from rich.table import Table

    gpus = hw["gpus"]
    machine = (f"{len(gpus)} × {min(g['vram_total_gb'] for g in gpus):.0f} GB GPU" if gpus else "no GPU")
    table = Table(title=f"Presets for this machine ({machine})" if hw.get("platform") != "planned"
                  else f"Presets for a planned machine ({machine})")
    table.add_column("preset", no_wrap=True)
    for col in ("fit", "why", "family", "type"):
        table.add_column(col)
    style = {FITS: "green", TIGHT: "yellow"}
    for preset, fit, reason in ranked:
        colour = style.get(fit, "red")
        table.add_row(preset.name, f"[{colour}]{fit}[/{colour}]", reason, preset.model_family, preset.model_type)
    console = Console()
    console.print(table)
    console.print("`tuner presets --show NAME` prints a preset's file, with the reason for every key.")
    for exc in errors:
        console.print(f"[red]broken preset:[/red] {exc}")
