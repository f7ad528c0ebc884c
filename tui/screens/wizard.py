"""The wizard's order of steps and the shared save-and-check of a step's config keys."""
from __future__ import annotations

from typing import Any

from tuner.engine.config import parse_train_config
from tuner.tui.screens.step import Problem
from tuner.tui.wizard_state import WizardState


def steps() -> list[type]:
    """The step screens in order (imported here so each step module stays independent)."""
    from tuner.tui.screens.step_dataset import DatasetStep
    from tuner.tui.screens.step_hardware import HardwareStep
    from tuner.tui.screens.step_model import ModelStep
    from tuner.tui.screens.step_preset import PresetStep
    from tuner.tui.screens.step_review import ReviewStep
    from tuner.tui.screens.step_training import TrainingStep, ValidationStep

    return [HardwareStep, ModelStep, PresetStep, DatasetStep, ValidationStep, TrainingStep, ReviewStep]


def first_step(state: WizardState):
    return steps()[0](state)


def next_step(index: int, state: WizardState):
    return steps()[index + 1](state)


def save_config_keys(state: WizardState, values: dict[str, Any], *, commit: bool = True) -> list[Problem]:
    """Check `values` (key → entered value) against the config model; store them when they pass.

    Only findings about these keys block the step: the others belong to other steps (or the review).
    """
    merged = {k: v for k, v in {**state.config, **values}.items() if v is not None}
    train, issues = parse_train_config(merged)
    problems = [Problem(i.key.split(".")[0], i.message) for i in issues
                if i.level == "error" and (i.key or "").split(".")[0] in values]
    if problems or not commit:
        return problems
    parsed = train.model_dump(mode="json") if train is not None else {}
    for key, value in values.items():
        if value is None:
            state.config.pop(key, None)
        else:
            # The model's typed value: "4" typed into a number field is written as 4.
            state.config[key] = parsed.get(key, value)
    return []
