"""Hardware-tiered presets: TOML files shipped here (and in the user's config folder) that overlay a config.

Torch-free, like the daemon and the TUI that use it. The files are package data; the code is
split by job: loader.py reads them, ranking.py matches them to a machine, overlay.py puts one
onto a config, cli.py is `tuner presets`.
"""
from __future__ import annotations

from .loader import Preset, PresetError, list_presets, load_preset, read_preset, user_preset_dir
from .overlay import apply_preset, check_preset
from .ranking import FITS, NO_FIT, TIGHT, assess, rank_presets


def command(args) -> int:
    """`tuner presets`: list the presets ranked for this (or a planned) machine, or show one."""
    from .cli import command as run

    return run(args)


__all__ = [
    "Preset", "PresetError", "list_presets", "load_preset", "read_preset", "user_preset_dir",
    "apply_preset", "check_preset", "rank_presets", "assess", "FITS", "TIGHT", "NO_FIT", "command",
]
