"""The wizard end to end on a generated dataset, and the preset ranking for planned machines."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList, Switch

from tuner.engine.config import check_bundle, job_files, load_bundle, parse_train_config, write_job_files
from tuner.engine.config.jobfiles import FILE_NAMES
from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.step_dataset import DatasetStep
from tuner.tui.screens.step_hardware import HardwareStep
from tuner.tui.screens.step_model import ModelStep
from tuner.tui.screens.step_preset import PresetStep
from tuner.tui.screens.step_review import ReviewStep
from tuner.tui.screens.step_training import TrainingStep, ValidationStep
from tuner.tui.widgets.preset_picker import PresetPicker

from tui_support import unexpected_errors  # noqa: F401  (fails a test on any error the crash guard caught)

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def no_daemon(tmp_path, monkeypatch):
    """A private data dir and socket, so no user's tunerd answers these tests."""
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNER_RUNTIME_DIR", str(tmp_path / "run"))


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def next_step(pilot, expected: type) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)
    assert isinstance(pilot.app.screen, expected), pilot.app.screen.query_one("#step-problems").render()


def field(screen, key: str):
    return screen.query_one(f"#in-{key}")


async def test_wizard_writes_files_that_check_clean_and_match_the_review(tmp_path):
    images = make_dataset(tmp_path / "shapes", count=3)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, HardwareStep)
        await next_step(pilot, ModelStep)
        await next_step(pilot, PresetStep)
        picker = app.screen.query_one(PresetPicker)
        assert picker.highlighted.name == "sana-1.6b-24gb-full"  # the best fit is offered first
        await next_step(pilot, DatasetStep)
        screen = app.screen
        screen.query_one("#folder", Input).value = str(images)
        screen.rescan()   # what the pause after typing triggers, without waiting for the timer
        await settle(pilot)
        # 3 images cannot fill the preset's batch of 4: the step says so, blocks, and offers a fix.
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, DatasetStep)
        assert screen.report is not None and screen.report.usable == 3
        assert screen.report.suggested_repeats == 1
        assert "set repeats to 1" in str(screen.query_one("#step-problems").render())
        await pilot.press("ctrl+r")
        screen.rescan()
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, ValidationStep), app.screen.query_one("#step-problems").render()
        field(app.screen, "validation_prompt").value = "a red circle on a white background"
        app.screen.query_one("#subject", Input).value = "sks shape"
        await pilot.press("ctrl+l")
        await next_step(pilot, TrainingStep)
        field(app.screen, "max_train_steps").value = "50"
        field(app.screen, "learning_rate").value = "fast"
        field(app.screen, "output_dir").value = str(tmp_path / "out")
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, TrainingStep)
        assert "learning rate: got 'fast'" in str(app.screen.query_one("#step-problems").render())
        # Back and forth keeps what was entered, even what is not valid yet.
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert isinstance(app.screen, ValidationStep)
        assert field(app.screen, "validation_prompt").value == "a red circle on a white background"
        await next_step(pilot, TrainingStep)
        assert field(app.screen, "max_train_steps").value == "50"
        assert field(app.screen, "learning_rate").value == "fast"
        field(app.screen, "learning_rate").value = "2e-4"
        field(app.screen, "output_dir").value = str(tmp_path / "out")
        await next_step(pilot, ReviewStep)
        review = app.screen
        assert review.issues is not None and not [i for i in review.issues if i.level == "error"], review.issues
        target = tmp_path / "written"
        review.query_one("#target", Input).value = str(target)
        await pilot.press("ctrl+w")
        await settle(pilot)
        shown = {name: review.query_one(f"#show-{name.split('.')[0]}").content.code for name in review.files}
        bundle, verdict = review.bundle, review.issues

    # What was written is job_files' output for the values checked, byte for byte: what tunerd runs.
    write_job_files(job_files(bundle, target), tmp_path / "expected")
    for name in FILE_NAMES:
        assert (target / name).read_bytes() == (tmp_path / "expected" / name).read_bytes(), name
    # The review shows the values entered: the same settings as written, the companions aside.
    config = json.loads((target / "config.json").read_text())
    shown_config = json.loads(shown["config.json"])
    assert set(config) - set(shown_config) == {"data_backend_config", "user_prompt_library"}
    assert parse_train_config(shown_config)[0].model_dump(include=set(shown_config)) == \
           load_bundle(target).train.model_dump(include=set(shown_config))
    assert json.loads(shown["multidatabackend.json"]) == json.loads((target / "multidatabackend.json").read_text())
    # The review's verdict is check_bundle's on the written folder, plus the dataset scan's findings:
    # 6 samples (3 images, repeats 1) fill one batch of 4 and leave 2 out of each epoch.
    engine = [(i.level, Path(i.file).name, i.key, i.message) for i in check_bundle(target, hardware=describe(24, 1))]
    assert [(i.level, i.file, i.key, i.message) for i in verdict if i.key != "dataset.repeats"] == engine
    [left_out] = [i for i in verdict if i.key == "dataset.repeats"]
    assert left_out.level == "warning" and left_out.message.startswith("2 of 6 samples per epoch are left out")
    assert not [i for i in verdict if i.level == "error"]
    assert config["max_train_steps"] == 50 and config["output_dir"] == str(tmp_path / "out")
    assert config["learning_rate"] == 2e-4
    assert config["validation_prompt"] == "a red circle on a white background"
    datasets = json.loads((target / "multidatabackend.json").read_text())
    assert datasets[0]["instance_data_dir"] == str(images)
    prompts = json.loads((target / "user_prompt_library.json").read_text())
    assert len(prompts) == 15 and all("sks shape" in p for p in prompts.values())


async def ranked_for(vram: float, gpus: int) -> list[tuple[str, str]]:
    """The preset step's ranking after planning `gpus` × `vram` GB on the hardware step."""
    app = TunerApp(hardware=describe(8, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        app.screen.query_one("#planned", Switch).value = True
        await pilot.pause()
        app.screen.query_one("#vram", Input).value = str(vram)
        app.screen.query_one("#gpus", Input).value = str(gpus)
        await next_step(pilot, ModelStep)
        await next_step(pilot, PresetStep)
        picker = app.screen.query_one(PresetPicker)
        assert app.screen.query_one(OptionList).option_count == len(picker.ranked) + 1   # and "no preset"
        return [(p.name, fit) for p, fit, _ in picker.ranked]


async def test_preset_ranking_follows_the_planned_hardware():
    small = await ranked_for(12, 1)
    assert small[0] == ("sana-1.6b-12gb-lokr-nf4", "fits")
    assert dict(small)["sana-1.6b-24gb-full"] == "does not fit"
    assert dict(small)["sana-1.6b-multigpu-full"] == "does not fit"

    mid = await ranked_for(24, 1)
    assert mid[0] == ("sana-1.6b-24gb-full", "fits")
    assert dict(mid)["sana-1.6b-12gb-lokr-nf4"] == "fits"
    assert dict(mid)["sana-1.6b-multigpu-full"] == "does not fit"

    big = await ranked_for(24, 4)
    assert big[0] == ("sana-1.6b-multigpu-full", "fits")
    assert [name for name, fit in big if fit == "does not fit"] == []


async def test_a_simpletuner_config_opens_keeps_its_settings_and_writes_back_clean(tmp_path, monkeypatch):
    fixture = Path(__file__).parent / "configs" / "simpletuner-sd3"
    shutil.copytree(fixture, tmp_path / "st")
    make_dataset(tmp_path / "st" / "datasets" / "dog", count=4, size=512)
    monkeypatch.chdir(tmp_path / "st")   # SimpleTuner resolves its paths from where it runs
    original = load_bundle(tmp_path / "st" / "config").train
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_wizard(str(tmp_path / "st" / "config"))
        await settle(pilot)
        await next_step(pilot, ModelStep)
        assert app.screen.query_one("#family").value == "sd3"
        await next_step(pilot, PresetStep)
        assert app.screen.query_one(PresetPicker).keep   # an opened config is not overwritten by default
        await next_step(pilot, DatasetStep)
        assert app.screen.query_one("#folder", Input).value == str(tmp_path / "st" / "datasets" / "dog")
        for step in (ValidationStep, TrainingStep, ReviewStep):
            await next_step(pilot, step)
        review = app.screen
        assert review.issues is not None and not [i for i in review.issues if i.level == "error"], review.issues
        review.query_one("#target", Input).value = str(tmp_path / "edited")
        await pilot.press("ctrl+w")
        await settle(pilot)
    written = load_bundle(tmp_path / "edited").train
    # Every setting the user had survives; only paths are now absolute (the folder runs from anywhere).
    moved = {"output_dir", "data_backend_config", "user_prompt_library"}
    for key in original.model_fields_set - moved:
        assert getattr(written, key) == getattr(original, key), key
    assert written.output_dir == str(tmp_path / "st" / "output" / "models")
    assert not [i for i in check_bundle(tmp_path / "edited") if i.level == "error"]


async def test_review_says_when_the_folder_cannot_be_written_and_the_app_lives_on(tmp_path, monkeypatch):
    # /proc/x used to end the app with FileNotFoundError, losing everything typed.
    fixture = Path(__file__).parent / "configs" / "simpletuner-sd3"
    shutil.copytree(fixture, tmp_path / "st")
    make_dataset(tmp_path / "st" / "datasets" / "dog", count=4, size=512)
    monkeypatch.chdir(tmp_path / "st")
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_wizard(str(tmp_path / "st" / "config"))
        await settle(pilot)
        for step in (ModelStep, PresetStep, DatasetStep, ValidationStep, TrainingStep, ReviewStep):
            await next_step(pilot, step)
        review = app.screen
        review.query_one("#target", Input).value = "/proc/x"
        await pilot.press("ctrl+w")
        await settle(pilot)
        assert app.is_running and app.screen is review
        assert "cannot write the config to /proc/x" in str(review.query_one("#step-problems").render())
        review.query_one("#target", Input).value = str(tmp_path / "good")
        await pilot.press("ctrl+w")
        await settle(pilot)
    assert (tmp_path / "good" / "config.json").is_file()



async def test_writing_back_into_an_opened_folder_keeps_the_users_files_once(tmp_path, monkeypatch):
    fixture = Path(__file__).parent / "configs" / "simpletuner-sd3"
    shutil.copytree(fixture, tmp_path / "st")
    make_dataset(tmp_path / "st" / "datasets" / "dog", count=4, size=512)
    monkeypatch.chdir(tmp_path / "st")
    folder = tmp_path / "st" / "config"
    original = (folder / "config.json").read_bytes()
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_wizard(str(folder))
        await settle(pilot)
        for step in (ModelStep, PresetStep, DatasetStep, ValidationStep, TrainingStep, ReviewStep):
            await next_step(pilot, step)
        assert app.screen.query_one("#target", Input).value == str(folder)
        for _ in range(2):   # a second write must not replace the backup with the first write's output
            await pilot.press("ctrl+w")
            await settle(pilot)
    assert (folder / "config.json.orig").read_bytes() == original
    assert b'"--model_family"' in original and (folder / "multidatabackend.json.orig").is_file()
    assert load_bundle(folder).train.model_family == "sd3"
