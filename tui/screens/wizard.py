"""The wizard's order of steps and the shared save-and-check of a step's config keys."""
from __future__ import annotations

from typing import Any

from rich.text import Text

from tuner.engine.config import parse_train_config
from tuner.engine.jobdir import DATABACKEND
from tuner.tui.screens.step import Problem
from tuner.tui.widgets.field_row import brief
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


def field_place(file: str, key: str) -> tuple[str, str] | None:
    """(the step's title, the field's label) where a file's key is edited; None for a key no step has a field for.

    `key` is an issue's key: "learning_rate" in config.json, "<dataset id>.resolution" in the datasets file.
    """
    from tuner.tui.screens.step import STEP_TITLES

    name = key.split(".")[0] if file != DATABACKEND else key.partition(".")[2].rsplit(".", 1)[-1]
    for step in steps():
        if step.FILE == file and name in step.labels():
            return STEP_TITLES[step.INDEX], step.labels()[name]
    return None


def issue_place(issue) -> str:
    """Where the wizard fixes an issue, as the user reads it: "Training › batch size" (Review for a key without a field)."""
    place = field_place(issue.file, issue.key)
    if place is None:
        return f"{'Dataset' if issue.file == DATABACKEND else 'Review'} › {issue.key}"
    if issue.file == DATABACKEND:
        return f"{place[0]} › {place[1]} ({issue.key.partition('.')[0]})"
    return f"{place[0]} › {place[1]}"


def found_summary(folder: str, issues: list) -> Text:
    """An opened folder's errors, each with the step and field that fix it (Review for a key without one)."""
    text = Text(f"{folder} has {len(issues)} problem{'s' if len(issues) != 1 else ''} to fix; each is marked at its "
                "field:\n", style="bold")
    for issue in issues:
        hint = (" (Ctrl+K there removes an unknown key)"
                if issue.file == DATABACKEND and field_place(issue.file, issue.key) is None else "")
        text.append(f"  • {issue_place(issue)}{hint}: {brief(issue.message)}\n")
    return text
