"""Shared helpers for the engine tests: one tiny Sana per test session, demo-style config folders."""
from __future__ import annotations

import json
from pathlib import Path

from tuner.engine.demo import write_demo_config
from tuner.engine.events import read_events
from tuner.engine.jobdir import EVENTS


def demo_config(tmp: Path, tiny_model: Path, **overrides) -> Path:
    """A small config folder: the tiny model, a generated dataset, validation off unless asked for."""
    defaults = dict(max_train_steps=10, checkpoint_step_interval=0, validation_step_interval=0,
                    validation_disable=True, use_ema=False, ema_validation="none", caption_dropout_probability=0.0,
                    lr_scheduler="constant", lr_warmup_steps=0)
    defaults.update(overrides)
    images = defaults.pop("images", 8)
    return write_demo_config(tmp, model_dir=tiny_model, images=images, **defaults)


def events_of(job_dir: Path, kind: str | None = None) -> list[dict]:
    return [e for e in read_events(job_dir / EVENTS) if kind is None or e["type"] == kind]


def edit_config(config_dir: Path, **changes) -> None:
    path = config_dir / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))
