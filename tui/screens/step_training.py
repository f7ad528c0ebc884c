"""Wizard steps 5 and 6: validation samples (with the prompt library) and the training settings."""
from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static, TextArea

from tuner.engine import checkpoints
from tuner.engine.config import TrainConfig
from tuner.tui.folders import folder_to_write
from tuner.tui.prompt_library import from_text, portrait_prompts, to_text
from tuner.tui.screens.step import Problem, StepScreen
from tuner.tui.screens.wizard import save_config_keys
from tuner.tui.widgets.config_form import ConfigField, form_values, own_problems
from tuner.tui.widgets.field_row import FieldRow

VALIDATION_KEYS = ("validation_prompt", "validation_negative_prompt", "validation_resolution", "validation_guidance",
                   "validation_num_inference_steps", "validation_step_interval", "validation_preview")
TRAINING_KEYS = ("max_train_steps", "num_train_epochs", "learning_rate", "optimizer", "lr_scheduler",
                 "train_batch_size", "gradient_accumulation_steps", "checkpoint_step_interval",
                 "checkpoints_total_limit", "use_ema", "mixed_precision", "gradient_checkpointing",
                 "gradient_checkpointing_interval", "output_dir", "resume_from_checkpoint")
LABELS = {"validation_prompt": "prompt", "validation_negative_prompt": "negative prompt",
          "validation_resolution": "resolutions (1024,768x1280)", "validation_guidance": "guidance",
          "validation_num_inference_steps": "steps", "validation_step_interval": "every N steps",
          "validation_preview": "live previews", "max_train_steps": "steps (0: use epochs)",
          "num_train_epochs": "epochs", "train_batch_size": "batch size",
          "gradient_accumulation_steps": "accumulation steps", "checkpoint_step_interval": "checkpoint every N steps",
          "checkpoints_total_limit": "checkpoints kept", "use_ema": "EMA", "mixed_precision": "precision",
          "gradient_checkpointing_interval": "grad. checkpointing interval", "output_dir": "output folder",
          "resume_from_checkpoint": "continue from checkpoint",
          "learning_rate": "learning rate", "optimizer": "optimizer", "lr_scheduler": "LR schedule",
          "gradient_checkpointing": "grad. checkpointing"}


def keep_raw(state, values: dict) -> None:
    """Store entered values as typed (going back must not lose them; Next checks them again)."""
    for key, value in values.items():
        if value is None:
            state.config.pop(key, None)
        else:
            state.config[key] = value


class ValidationStep(StepScreen):
    """What is sampled during training, and the prompt library (Ctrl+L adds the portrait template)."""

    INDEX = 4
    BINDINGS = [Binding("ctrl+l", "portraits", "Portrait prompts", priority=True)]

    @classmethod
    def labels(cls) -> dict[str, str]:
        return {key: LABELS.get(key, key) for key in VALIDATION_KEYS}

    def body(self) -> ComposeResult:
        for key in VALIDATION_KEYS:
            yield ConfigField(TrainConfig, key, self.state.config.get(key), label=LABELS.get(key))
        yield Static("Prompt library: one `nickname = prompt` per line", classes="help")
        yield FieldRow("subject", "subject for the template",
                       Input(placeholder="e.g. photo of sks woman — then Ctrl+L adds 15 portrait prompts",
                             compact=True, id="subject"))
        yield TextArea(to_text(self.state.prompts), id="library")

    def action_portraits(self) -> None:
        subject = self.query_one("#subject", Input).value.strip()
        if not subject:
            self.show_problems([Problem("subject", "type the subject first (what <token> stands for, e.g. 'sks woman')")])
            self.query_one("#subject", Input).focus()
            return
        library = self.query_one("#library", TextArea)
        existing, _ = from_text(library.text)
        library.text = to_text({**existing, **portrait_prompts(subject)})
        self.show_problems([])

    def keep(self) -> None:
        keep_raw(self.state, form_values(self))
        self.state.prompts = from_text(self.query_one("#library", TextArea).text)[0]

    def save(self) -> list[Problem]:
        prompts, found = from_text(self.query_one("#library", TextArea).text)
        problems = [Problem("", f"prompt library {p}") for p in found]
        problems += [Problem(k, message) for k, message in own_problems(self).items()]
        problems += save_config_keys(self.state, form_values(self), commit=not problems)
        if not problems:
            self.state.prompts = prompts
            if not prompts and not self.state.config.get("validation_prompt"):
                self.notify("no prompt and no prompt library: the run will make no validation samples",
                            severity="warning")
        return problems


class TrainingStep(StepScreen):
    """Length, optimizer, batch, checkpoints, EMA, precision, memory savers and where results go."""

    INDEX = 5

    @classmethod
    def labels(cls) -> dict[str, str]:
        return {key: LABELS.get(key, key) for key in TRAINING_KEYS}

    def body(self) -> ComposeResult:
        for key in TRAINING_KEYS:
            yield ConfigField(TrainConfig, key, self.state.config.get(key), label=LABELS.get(key))

    def keep(self) -> None:
        keep_raw(self.state, form_values(self))

    def save(self) -> list[Problem]:
        values = form_values(self)
        problems = [Problem(k, message) for k, message in own_problems(self).items()]
        if values.get("output_dir"):
            unusable = folder_to_write(values["output_dir"])
            if unusable:
                problems.append(Problem("output_dir", unusable))
            else:
                values["output_dir"] = str(Path(values["output_dir"]).expanduser().absolute())
                earlier = checkpoints.earlier_run(
                    Path(values["output_dir"]), values.get("resume_from_checkpoint"),
                    fix='type latest in "continue from checkpoint" to continue it, or choose a new output folder')
                if earlier:
                    problems.append(Problem("output_dir", earlier))
        return problems + save_config_keys(self.state, values, commit=not problems)
