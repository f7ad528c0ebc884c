"""Build tiny, deterministic models of each family in diffusers format, for tests and the demo.

Each folder has exactly the layout the family's pipeline `save_pretrained` writes, so the engine
loads it through the same `from_pretrained` path as a real model. Nothing is downloaded: the
tokenizers are built from an in-memory vocabulary. One file per family.
"""
from __future__ import annotations

import time
from pathlib import Path

from tuner.engine import families
from tuner.engine.tiny.common import (MARKER, TINY_SANA_VERSION, TINY_SANAVIDEO_VERSION, TINY_SD3_VERSION,
                                      VERSIONS, is_complete)
from tuner.engine.tiny.sana import build_tiny_sana
from tuner.engine.tiny.sanavideo import build_tiny_sanavideo
from tuner.engine.tiny.sd3 import build_tiny_sd3
from tuner.engine.tiny.tokenizers import tiny_clip_tokenizer, tiny_t5_tokenizer, tiny_tokenizer

__all__ = ["MARKER", "TINY_SANA_VERSION", "TINY_SD3_VERSION", "TINY_SANAVIDEO_VERSION", "VERSIONS", "is_complete",
           "build_tiny_sana", "build_tiny_sd3", "build_tiny_sanavideo", "tiny_tokenizer", "tiny_clip_tokenizer",
           "tiny_t5_tokenizer", "command"]

def command(args) -> int:
    """`tuner tiny FAMILY OUT`: build the tiny model and say where it is."""
    card = families.card(args.family) if args.family in families.names() else None
    builder = card.tiny_builder() if card else None
    if builder is None:
        known = ", ".join(repr(c.name) for c in families.cards() if c.tiny)
        print(f"tuner tiny: no tiny model for family {args.family!r} (only {known})")
        return 2
    started = time.perf_counter()
    out = Path(args.out)
    reused = is_complete(out, family=args.family)
    builder(out)
    verb = "already there" if reused else f"built in {time.perf_counter() - started:.1f} s"
    print(f"tiny {args.family} (v{VERSIONS[args.family]}) {verb}: {out.resolve()}")
    return 0
