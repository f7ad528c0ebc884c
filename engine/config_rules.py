"""Cross-field rules: combinations of settings that cannot work, each with what to change."""
from __future__ import annotations

from tuner.engine.config import ConfigBundle, Issue


def run_rules(bundle: ConfigBundle, hardware: dict | None = None) -> list[Issue]:
    """Every cross-field problem in a loaded bundle."""
    return []
