"""The engine's cheap preflight, said in the wizard at the field that fixes it: an output folder holding an
earlier run's checkpoints, a model folder of another family, a batch the dataset cannot fill or divide into."""
from __future__ import annotations

import json

from textual.widgets import Input, Select

from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.step_dataset import DatasetStep
from tuner.tui.screens.step_model import ModelStep
from tuner.tui.screens.step_preset import PresetStep
from tuner.tui.screens.step_review import ReviewStep
from tuner.tui.screens.step_training import TrainingStep, ValidationStep

from tui_support import SIZE, keys, no_daemon, problem_at, problems_text, settle, unexpected_errors  # noqa: F401


async def next_step(pilot, expected: type) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)
    assert isinstance(pilot.app.screen, expected), problems_text(pilot.app.screen)


def field(screen, key: str):
    return screen.query_one(f"#in-{key}")


async def to_training(pilot, images) -> None:
    """New, the suggested model and preset, `images` as the dataset, on to the Training step."""
    await settle(pilot)
    await keys(pilot, "n")
    await next_step(pilot, ModelStep)
    await next_step(pilot, PresetStep)
    await next_step(pilot, DatasetStep)
    pilot.app.screen.query_one("#folder", Input).value = str(images)
    pilot.app.screen.rescan()
    await settle(pilot)
    await next_step(pilot, ValidationStep)
    await next_step(pilot, TrainingStep)


def verdict(review) -> str:
    return str(review.query_one("#verdict").render())


async def test_an_output_folder_with_an_earlier_runs_checkpoints_is_caught_at_its_field(tmp_path):
    images = make_dataset(tmp_path / "shapes", count=8)
    out = tmp_path / "out"
    (out / "checkpoint-30").mkdir(parents=True)
    (out / "checkpoint-30" / "checkpoint.json").write_text("{}")
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await to_training(pilot, images)
        training = app.screen
        field(training, "output_dir").value = str(out)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen is training
        said = problem_at(training, "output_dir")
        assert "already holds checkpoints of an earlier run (latest: checkpoint-30)" in said
        assert 'type latest in "continue from checkpoint"' in said and "new output folder" in said
        assert "output folder:" in problems_text(training)
        # Continuing the earlier run is the field below it.
        field(training, "resume_from_checkpoint").value = "latest"
        await next_step(pilot, ReviewStep)
        assert app.screen.issues is not None and not [i for i in app.screen.issues if i.level == "error"]
        assert json.loads(app.screen.files["config.json"])["resume_from_checkpoint"] == "latest"


async def test_review_marks_a_batch_the_dataset_cannot_fill_at_the_datasets_repeats(tmp_path):
    images = make_dataset(tmp_path / "shapes", count=8)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await to_training(pilot, images)
        # The dataset step passed with the preset's batch; a batch of 16 raised here cannot be filled by 8 images.
        field(app.screen, "train_batch_size").value = "16"
        field(app.screen, "output_dir").value = str(tmp_path / "out")
        await next_step(pilot, ReviewStep)
        review = app.screen
        assert review.bundle is None
        said = verdict(review)
        assert "✗ 1 error(s)" in said and "✗ Dataset › repeats (" in said and "fewer than the" in said
        assert "Ctrl+B goes back; each error is marked at its field" in said
        await pilot.press("ctrl+w")
        await settle(pilot)
        assert not (tmp_path / "out-config").exists()
        # Back to the Dataset step: the error waits at the repeats field, with the cursor on it.
        await keys(pilot, "ctrl+b", "ctrl+b", "ctrl+b")
        dataset = app.screen
        assert isinstance(dataset, DatasetStep)
        assert "fewer than the" in problem_at(dataset, "repeats")
        assert app.focused is field(dataset, "repeats")


async def test_a_sana_family_pointed_at_an_sd3_folder_is_stopped_at_the_model_step(tmp_path):
    folder = tmp_path / "my-sd35"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "n")
        await next_step(pilot, ModelStep)
        model = app.screen
        assert model.query_one("#family", Select).value == "sana"
        model.query_one("#model", Input).value = str(folder)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen is model
        said = problem_at(model, "pretrained_model_name_or_path")
        assert "holds a StableDiffusion3Pipeline (SD3 / 3.5, model_family 'sd3'), not a Sana model" in said
        model.query_one("#family", Select).value = "sd3"
        await settle(pilot)
        model.query_one("#model", Input).value = str(folder)
        await next_step(pilot, PresetStep)


async def test_review_warns_of_samples_each_epoch_leaves_out_by_the_fields_label(tmp_path):
    images = make_dataset(tmp_path / "shapes", count=9)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await to_training(pilot, images)
        field(app.screen, "output_dir").value = str(tmp_path / "out")
        field(app.screen, "train_batch_size").value = "4"
        await next_step(pilot, ReviewStep)
        said = verdict(app.screen)
        assert "✓ check_bundle: no errors" in said
        assert "! Dataset › repeats (" in said and "samples per epoch are left out" in said
