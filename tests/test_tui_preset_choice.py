"""Taking a preset as a user meets it: 'no preset' on New, and a question before it resets what they set."""
from __future__ import annotations

import pytest
from textual.widgets import OptionList

from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.confirm import Confirm
from tuner.tui.screens.step_dataset import DatasetStep
from tuner.tui.screens.step_preset import PresetStep
from tuner.tui.widgets.preset_picker import PresetPicker
from tuner.tui.wizard_state import WizardState

from tui_support import SIZE, keys, no_daemon, settle, unexpected_errors  # noqa: F401


async def test_new_offers_no_preset_and_taking_it_changes_nothing():
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in ("n", "ctrl+n", "ctrl+n"):
            await pilot.press(key)
            await settle(pilot)
        assert isinstance(app.screen, PresetStep)
        picker = app.screen.query_one(PresetPicker)
        assert picker.highlighted.name == "sana-1.6b-24gb-full"   # the best fit is still what Next takes
        first = str(app.screen.query_one(OptionList).get_option_at_index(0).prompt)
        assert "no preset" in first
        before = dict(app.screen.state.config)
        await pilot.press("up")
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, DatasetStep)
        assert app.screen.state.config == before and app.screen.state.preset is None
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert app.screen.query_one(PresetPicker).keep   # the choice is shown again on coming back


@pytest.mark.parametrize("answer, expected", [("y", 1e-5), ("n", 3e-4)])
async def test_a_preset_asks_before_resetting_a_field_the_user_set(answer, expected):
    state = WizardState(hardware=describe(24, 1))
    state.config["learning_rate"] = 3e-4   # what the user typed on the training step
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.push_screen(PresetStep(state))
        await settle(pilot)
        assert app.screen.query_one(PresetPicker).highlighted.name == "sana-1.6b-24gb-full"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, Confirm)
        question = str(app.screen.query_one("#question").render())
        assert "Training › learning rate" in question and "0.0003" in question
        await pilot.press(answer)
        await settle(pilot)
        assert isinstance(app.screen, DatasetStep)
        assert state.config["learning_rate"] == expected
        assert state.config["train_batch_size"] == 4   # the rest of the preset is taken either way
        assert state.preset == "sana-1.6b-24gb-full"


async def test_a_preset_over_untouched_defaults_asks_nothing():
    state = WizardState(hardware=describe(24, 1))
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.push_screen(PresetStep(state))
        await keys(pilot, "ctrl+n")
        assert isinstance(app.screen, DatasetStep)


async def test_the_demo_preset_trains_the_demos_own_tiny_model_and_shapes(tmp_path):
    """On a machine without a GPU the demo preset comes first; taking it must not leave the 1.6B model in place."""
    app = TunerApp(hardware=describe(0, 0))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await keys(pilot, "n", "ctrl+n", "ctrl+n")
        assert app.screen.query_one(PresetPicker).highlighted.name == "sana-tiny-demo"
        await keys(pilot, "ctrl+n")   # the model is built by then (a worker the settle waits for)
        assert isinstance(app.screen, DatasetStep)
        state = app.screen.state
        demo = tmp_path / "data" / "demo"
        assert state.config["pretrained_model_name_or_path"] == str(demo / "model")
        assert (demo / "model" / "model_index.json").is_file()
        assert state.pixel_datasets()[0]["instance_data_dir"] == str(demo / "dataset")
        assert len(list((demo / "dataset").glob("*.png"))) == 96
        assert state.config["validation_prompt"] == "a red circle on a white background"
        assert len(state.prompts) == 2   # the other shapes, as `tunerd demo` samples them
        app.screen.rescan()
        await settle(pilot)
        await keys(pilot, "ctrl+n", "ctrl+n")
        app.screen.query_one("#in-output_dir").value = str(tmp_path / "out")
        await keys(pilot, "ctrl+n")
        review = app.screen
        assert review.issues is not None and not [i for i in review.issues if i.level == "error"], review.issues
