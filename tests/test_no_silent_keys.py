"""Every config and dataset key acts: the engine or the daemon reads it, or `tuner check` warns about it.

A field added to the config models without wiring it (or a warning) fails here, so no key a user sets
is parsed and dropped.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuner.engine.config.models import DatasetConfig, TrainConfig, VideoConfig
from tuner.engine.config.rules import DATASET_NOT_ACTING_YET, NOT_ACTING_YET, VIDEO_NOT_ACTING_YET

ROOT = Path(__file__).resolve().parents[1]
# Where keys are only declared, parsed or judged: reading a key there does not make it act.
NOT_USE = {"engine/config/models.py", "engine/config/io.py", "engine/config/names.py", "engine/config/values.py",
           "engine/config/__init__.py", "engine/config/rules.py"}
# Keys that act without the engine reading them, and why.
ACTS_OTHERWISE = {
    "validation_resolution": "read through TrainConfig.validation_resolutions(), which validation calls",
    "attention_mechanism": "only the default (PyTorch SDPA, what runs) passes check without an error or warning",
    "metadata_backend": "only 'discovery' is allowed, and discovery is what the data pipeline does",
    "ignore_final_epochs": "a run always stops at max_train_steps; check warns when false is set beside it",
    "fsdp_version": "only 2 is allowed (FSDP1 is refused), and FSDP2 is what fsdp_enable runs",
}
SOURCES = {str(p.relative_to(ROOT)): p.read_text() for folder in ("engine", "daemon")
           for p in (ROOT / folder).rglob("*.py") if str(p.relative_to(ROOT)) not in NOT_USE}
FIELDS = [(model, name) for model in (TrainConfig, DatasetConfig, VideoConfig) for name in model.model_fields]


def readers(name: str) -> list[str]:
    pattern = re.compile(rf"\.{name}\b|[\"']{name}[\"']")
    return [path for path, text in SOURCES.items() if pattern.search(text)]


@pytest.mark.parametrize("model,name", FIELDS, ids=[f"{m.__name__}.{n}" for m, n in FIELDS])
def test_every_key_is_read_or_warned_about(model, name) -> None:
    warned = {TrainConfig: NOT_ACTING_YET, DatasetConfig: DATASET_NOT_ACTING_YET, VideoConfig: VIDEO_NOT_ACTING_YET}
    assert readers(name) or name in warned[model] or name in ACTS_OTHERWISE, (
        f"{model.__name__}.{name} is parsed but nothing reads it: wire it, or warn about it in "
        "engine/config/rules.py (NOT_ACTING_YET)")


def test_the_scan_sees_the_engines_reads() -> None:
    # A scan that found nothing would pass every key above.
    assert "engine/train/loop.py" in readers("max_nan_steps")
    assert readers("no_such_key_anywhere") == []
