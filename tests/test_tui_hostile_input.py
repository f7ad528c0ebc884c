"""Hostile input into every wizard field: the app keeps running, each field says what is wrong with its
value, and going back and forth keeps what was typed."""
from __future__ import annotations

from textual.widgets import Input, Switch, TextArea

from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.step_dataset import DatasetStep
from tuner.tui.screens.step_hardware import HardwareStep
from tuner.tui.screens.step_model import ModelStep
from tuner.tui.screens.step_preset import PresetStep
from tuner.tui.screens.step_review import ReviewStep
from tuner.tui.screens.step_training import TrainingStep, ValidationStep

from tui_support import SIZE, no_daemon, problem_at, problems_text, settle, unexpected_errors  # noqa: F401

LONG = "x" * 10_000


async def type_into(pilot, selector: str, text: str) -> None:
    """Clear an input and type `text` into it key by key (a long text is pasted, as a user would)."""
    widget = pilot.app.screen.query_one(selector, Input)
    widget.focus()
    widget.value = ""
    if len(text) > 40:
        widget.insert_text_at_cursor(text)
    else:
        await pilot.press(*text)
    await pilot.pause()


async def press_next(pilot) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)


async def rescanned(pilot) -> None:
    pilot.app.screen.rescan()   # what the pause after typing starts, without waiting for its timer
    await settle(pilot)


async def test_hostile_input_in_every_field_is_a_message_at_that_field(tmp_path):
    images = make_dataset(tmp_path / "shapes", count=8)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)

        # 1 Hardware: letters, negative, infinite and huge numbers for the planned machine.
        hardware = app.screen
        assert isinstance(hardware, HardwareStep)
        hardware.query_one("#planned", Switch).value = True
        await pilot.pause()
        for vram, gpus in (("abc", "-1"), ("-24", "1e3"), ("1e400", "99999999999"), ("nan", LONG)):
            await type_into(pilot, "#vram", vram)
            await type_into(pilot, "#gpus", gpus)
            await press_next(pilot)
            assert app.screen is hardware
            assert f"got {vram!r}" in problem_at(hardware, "vram")
            assert "whole number from 0" in problem_at(hardware, "gpus")
        assert "VRAM per GPU (GB)" in problems_text(hardware) and "GPU count" in problems_text(hardware)
        await type_into(pilot, "#vram", "24")
        await type_into(pilot, "#gpus", "1")
        await press_next(pilot)

        # 2 Model: a 10 000-character id, a folder that does not exist.
        model = app.screen
        assert isinstance(model, ModelStep)
        for typed, says in ((LONG, "neither a folder here nor a Hugging Face id"),
                            (str(tmp_path / "no-such-model"), "is not a diffusers folder")):
            await type_into(pilot, "#model", typed)
            await press_next(pilot)
            assert app.screen is model and says in problem_at(model, "pretrained_model_name_or_path")
        # Back and forward: the step is built again from what was kept, the bad path included.
        await pilot.press("ctrl+b")
        assert app.screen is hardware and hardware.query_one("#vram", Input).value == "24"
        await press_next(pilot)
        model = app.screen
        assert model.query_one("#model", Input).value == str(tmp_path / "no-such-model")
        await type_into(pilot, "#model", "terminusresearch/sana-1.6b-1024px")
        await press_next(pilot)
        assert isinstance(app.screen, PresetStep)
        await press_next(pilot)

        # 4 Dataset: missing and unreadable folders, letters / negative / huge numbers, a 10 000-character text.
        dataset = app.screen
        assert isinstance(dataset, DatasetStep)
        for folder, says in ((str(tmp_path / "missing"), "does not exist"), (LONG, "cannot be read"),
                             (str(images / "0.png"), "")):
            await type_into(pilot, "#folder", folder)
            await rescanned(pilot)
            await press_next(pilot)
            assert app.screen is dataset
            assert problem_at(dataset, "instance_data_dir") and says in problem_at(dataset, "instance_data_dir")
        await type_into(pilot, "#folder", str(images))
        await type_into(pilot, "#in-instance_prompt", LONG)
        for resolution, repeats in (("abc", "-3"), ("-5", "1e30"), ("1e400", LONG)):
            await type_into(pilot, "#in-resolution", resolution)
            await type_into(pilot, "#in-repeats", repeats)
            await rescanned(pilot)
            await press_next(pilot)
            assert app.screen is dataset
            assert f"got {resolution!r}" in problem_at(dataset, "resolution")
            assert "got " in problem_at(dataset, "repeats")
            assert problem_at(dataset, "instance_data_dir") is None
        await type_into(pilot, "#in-resolution", "1e308")   # finite, but no image size can be computed from it
        await type_into(pilot, "#in-repeats", "0")
        await rescanned(pilot)
        await press_next(pilot)
        assert app.screen is dataset and "too large to size an image" in problems_text(dataset)
        # Back and forward keep the dataset as typed, the long prompt and the bad resolution included.
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert isinstance(app.screen, PresetStep)
        await press_next(pilot)
        dataset = app.screen
        assert dataset.query_one("#folder", Input).value == str(images)
        assert dataset.query_one("#in-instance_prompt", Input).value == LONG
        assert float(dataset.query_one("#in-resolution", Input).value) == 1e308   # kept as the number it is
        await type_into(pilot, "#in-resolution", "64")
        await rescanned(pilot)
        await press_next(pilot)

        # 5 Validation: letters, negative and huge numbers, sizes that are not sizes, a 10 000-character prompt.
        validation = app.screen
        assert isinstance(validation, ValidationStep), problems_text(dataset)
        await type_into(pilot, "#in-validation_prompt", LONG)
        bad = {"validation_guidance": "abc", "validation_num_inference_steps": "-1",
               "validation_resolution": "big", "validation_step_interval": "1e30"}
        for key, value in bad.items():
            await type_into(pilot, f"#in-{key}", value)
        validation.query_one("#library", TextArea).text = "no separator here\n" + "y" * 10_000
        await press_next(pilot)
        assert app.screen is validation
        for key, value in bad.items():
            assert f"got {value!r}" in problem_at(validation, key), key
        assert problem_at(validation, "validation_prompt") is None
        assert "prompt library" in problems_text(validation)
        validation.query_one("#library", TextArea).text = ""
        for key in bad:
            await type_into(pilot, f"#in-{key}", "")
        await press_next(pilot)

        # 6 Training: letters, infinity, a negative batch, unwritable and impossible output folders.
        training = app.screen
        assert isinstance(training, TrainingStep)
        bad = {"max_train_steps": "ten", "learning_rate": "inf", "train_batch_size": "-4",
               "checkpoints_total_limit": "99999999999999999999999999", "output_dir": "/proc/x"}
        for key, value in bad.items():
            await type_into(pilot, f"#in-{key}", value)
        await press_next(pilot)
        assert app.screen is training
        for key in ("max_train_steps", "learning_rate", "train_batch_size"):
            assert f"got {bad[key]!r}" in problem_at(training, key), key
        assert "cannot be made or written" in problem_at(training, "output_dir")
        assert "batch size" in problems_text(training) and "output folder" in problems_text(training)
        await type_into(pilot, "#in-output_dir", LONG)
        await press_next(pilot)
        assert "cannot be made or written" in problem_at(training, "output_dir")
        # Going back keeps the bad values too.
        await pilot.press("ctrl+b")
        await settle(pilot)
        await press_next(pilot)
        training = app.screen
        assert training.query_one("#in-max_train_steps", Input).value == "ten"
        assert training.query_one("#in-output_dir", Input).value == LONG
        good = {"max_train_steps": "20", "learning_rate": "1e-4", "train_batch_size": "1",
                "checkpoints_total_limit": "", "output_dir": str(tmp_path / "out")}
        for key, value in good.items():
            await type_into(pilot, f"#in-{key}", value)
        await press_next(pilot)

        # 7 Review: a folder that cannot hold the files.
        review = app.screen
        assert isinstance(review, ReviewStep), problems_text(training)
        for target in ("/proc/x", LONG):
            await type_into(pilot, "#target", target)
            await pilot.press("ctrl+w")
            await settle(pilot)
            assert app.screen is review and "cannot write the config to" in problem_at(review, "target")

        # All the way back and forward again: every step shows what was last typed.
        for step in (TrainingStep, ValidationStep, DatasetStep, PresetStep, ModelStep, HardwareStep):
            await pilot.press("ctrl+b")
            await settle(pilot)
            assert isinstance(app.screen, step)
        assert app.screen.query_one("#gpus", Input).value == "1"
        for step in (ModelStep, PresetStep, DatasetStep, ValidationStep, TrainingStep):
            await press_next(pilot)
            assert isinstance(app.screen, step), problems_text(app.screen)
        assert app.screen.query_one("#in-output_dir", Input).value == str(tmp_path / "out")
        assert app.screen.query_one("#in-max_train_steps", Input).value == "20"
        assert app.is_running
