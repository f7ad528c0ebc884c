"""Opening a SimpleTuner folder with problems: the wizard opens anyway, marks each problem where it is
fixed, and writing back keeps the user's own spelling, with a backup of their files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from textual.widgets import Button, Input

from tuner.engine.config import check_bundle, load_bundle
from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.open_folder import OpenFolder
from tuner.tui.screens.step_dataset import DatasetStep
from tuner.tui.screens.step_hardware import HardwareStep
from tuner.tui.screens.step_model import ModelStep
from tuner.tui.screens.step_preset import PresetStep
from tuner.tui.screens.step_review import ReviewStep
from tuner.tui.screens.step_training import TrainingStep, ValidationStep
from tuner.tui.widgets.loose_keys import LooseKeys

from tui_support import SIZE, no_daemon, problem_at, settle, unexpected_errors  # noqa: F401

FIXTURE = Path(__file__).parent / "configs" / "simpletuner-sd3"


def text(widget) -> str:
    return str(widget.render())


def broken_simpletuner_folder(tmp_path: Path) -> Path:
    """SimpleTuner's SD3 config with `--learning_rate` misspelled and its dataset folder not there."""
    shutil.copytree(FIXTURE, tmp_path / "st")
    path = tmp_path / "st" / "config" / "config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({("--lerning_rate" if k == "--learning_rate" else k): v for k, v in config.items()},
                               indent=2) + "\n")
    return tmp_path / "st" / "config"


async def next_step(pilot, expected: type) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)
    assert isinstance(pilot.app.screen, expected), text(pilot.app.screen.query_one("#step-problems"))


async def test_a_folder_with_problems_opens_marks_them_and_writes_back_in_the_users_spelling(tmp_path, monkeypatch):
    folder = broken_simpletuner_folder(tmp_path)
    monkeypatch.chdir(tmp_path / "st")   # SimpleTuner resolves its paths from where it runs
    original = {name: (folder / name).read_bytes() for name in ("config.json", "multidatabackend.json")}
    assert [i.key for i in check_bundle(folder) if i.level == "error"] == \
           ["lerning_rate", "dog-photos.instance_data_dir"]
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("o")
        await pilot.pause()   # (the folder tree's loader is a worker that never ends: nothing to wait for)
        assert isinstance(app.screen, OpenFolder)
        app.screen.query_one("#path", Input).value = str(folder)
        await pilot.press("enter")
        await settle(pilot)
        # The wizard opens, and its first step says what needs fixing and where.
        assert isinstance(app.screen, HardwareStep)
        found = text(app.screen.query_one("#found"))
        assert "2 problems" in found
        assert "Dataset › Folder (Ctrl+F browses) (dog-photos): 'datasets/dog' does not exist" in found
        assert "Review › lerning_rate: unknown key; did you mean 'learning_rate'?" in found
        for step in (ModelStep, PresetStep, DatasetStep):
            await next_step(pilot, step)
        dataset = app.screen
        assert "'datasets/dog' does not exist" in problem_at(dataset, "instance_data_dir")
        # The user points the field at where the photos really are.
        photos = make_dataset(tmp_path / "st" / "datasets" / "dog-photos", count=4, size=512)
        dataset.query_one("#folder", Input).value = str(photos)
        dataset.rescan()
        await settle(pilot)
        for step in (ValidationStep, TrainingStep, ReviewStep):
            await next_step(pilot, step)
        review = app.screen
        assert [i.key for i in review.issues if i.level == "error"] == ["lerning_rate"]
        loose = review.query_one(LooseKeys)
        assert [k.key for k in loose.keys] == ["lerning_rate", "disable_benchmark", "aspect_bucket_rounding",
                                               "minimum_image_size"]
        rename = review.query_one("#rename-0", Button)
        assert str(rename.label) == "rename to learning_rate"
        rename.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert not [i for i in review.issues if i.level == "error"], review.issues
        assert review.query_one("#target", Input).value == str(folder)
        await pilot.press("ctrl+w")
        await settle(pilot)
        # Back on step 1, the list of the folder's problems says they are fixed.
        for _ in range(6):
            await pilot.press("ctrl+b")
            await settle(pilot)
        assert "every problem it had is fixed" in text(app.screen.query_one("#found"))

    # The user's files, kept once as they were.
    for name, data in original.items():
        assert (folder / f"{name}.orig").read_bytes() == data
    theirs = json.loads(original["config.json"])
    written = json.loads((folder / "config.json").read_text())
    # Every key in the user's order and spelling (-- kept), the misspelled one renamed in its place ...
    assert list(written)[:len(theirs)] == [("--learning_rate" if k == "--lerning_rate" else k) for k in theirs]
    assert all(key.startswith("--") for key in written)   # ... and a key the wizard added spelled the same way
    # ... unchanged values as the user wrote them, SimpleTuner's options tuner does not act on still there.
    assert written["--learning_rate"] == "1e-4" and written["--train_batch_size"] == "1"
    assert written["--use_ema"] == "false" and written["--validation_guidance_skip_layers"] == "[7, 8, 9]"
    assert written["--disable_benchmark"] == "true" and written["--aspect_bucket_rounding"] == 2
    assert written["--data_backend_config"] == str(folder / "multidatabackend.json")
    datasets = json.loads((folder / "multidatabackend.json").read_text())
    assert datasets[0]["instance_data_dir"] == str(photos)
    assert datasets[0]["metadata_backend"] == "discovery" and datasets[0]["repeats"] == "10"
    assert list(datasets[0]) == list(json.loads(original["multidatabackend.json"])[0])
    # The folder now loads clean, with the user's values.
    assert not [i for i in check_bundle(folder) if i.level == "error"]
    assert load_bundle(folder).train.learning_rate == 1e-4


async def test_a_misspelled_dataset_key_is_removed_on_the_dataset_step(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE, tmp_path / "st")
    make_dataset(tmp_path / "st" / "datasets" / "dog", count=4, size=512)
    path = tmp_path / "st" / "config" / "multidatabackend.json"
    datasets = json.loads(path.read_text())
    datasets[0]["crop_stlye"] = datasets[0].pop("crop_style")
    path.write_text(json.dumps(datasets, indent=2))
    monkeypatch.chdir(tmp_path / "st")
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_wizard(str(tmp_path / "st" / "config"))
        await settle(pilot)
        assert "Dataset › dog-photos.crop_stlye (Ctrl+K there removes an unknown key): unknown key; did you mean " \
               "'crop_style'?" in text(app.screen.query_one("#found"))
        for step in (ModelStep, PresetStep, DatasetStep):
            await next_step(pilot, step)
        await pilot.press("ctrl+n")
        await settle(pilot)
        dataset = app.screen
        assert isinstance(dataset, DatasetStep)
        assert "unknown key; did you mean 'crop_style'?" in text(dataset.query_one("#step-problems"))
        assert any(b.binding.action == "drop_unknown" for b in app.active_bindings.values())   # offered in the footer
        await pilot.press("ctrl+k")
        await settle(pilot)
        await next_step(pilot, ValidationStep)
        assert "crop_stlye" not in app.screen.state.datasets[0]
