"""Leaving the wizard asks first when something was entered; the Review's folder survives back and forth."""
from __future__ import annotations

from textual.widgets import Input, Switch

from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.confirm import Confirm
from tuner.tui.screens.home import HomeScreen
from tuner.tui.screens.step_hardware import HardwareStep
from tuner.tui.screens.step_model import ModelStep
from tuner.tui.screens.step_review import ReviewStep
from tuner.tui.screens.step_training import TrainingStep
from tuner.tui.wizard_state import WizardState, new_dataset

from tui_support import SIZE, no_daemon, settle, unexpected_errors  # noqa: F401


async def test_escape_on_the_first_step_leaves_at_once_when_nothing_was_entered():
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, HardwareStep)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, HomeScreen)


async def test_escape_on_the_first_step_asks_before_losing_what_was_entered():
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, ModelStep)
        app.screen.query_one("#model", Input).value = "my-org/my-model"
        await pilot.press("escape")   # back to step 1: nothing is asked yet
        await settle(pilot)
        hardware = app.screen
        assert isinstance(hardware, HardwareStep)
        await pilot.press("escape")   # leaving the wizard would lose the model typed on step 2
        await settle(pilot)
        assert isinstance(app.screen, Confirm) and "will be lost" in str(app.screen.query_one("#question").render())
        await pilot.press("n")
        await settle(pilot)
        assert app.screen is hardware
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen.query_one("#model", Input).value == "my-org/my-model"
        await pilot.press("escape")
        await settle(pilot)
        # A planned machine typed on step 1 counts too.
        hardware.query_one("#planned", Switch).value = True
        await pilot.pause()
        await pilot.press("escape", "y")
        await settle(pilot)
        assert isinstance(app.screen, HomeScreen)


async def test_the_folder_typed_on_review_survives_going_back_and_forth(tmp_path):
    images = make_dataset(tmp_path / "shapes", count=4)
    state = WizardState(hardware=describe(24, 1), datasets=[{**new_dataset(), "instance_data_dir": str(images)}],
                        config={"model_family": "sana", "model_type": "full", "output_dir": str(tmp_path / "out"),
                                "pretrained_model_name_or_path": "terminusresearch/sana-1.6b-1024px"})
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.push_screen(TrainingStep(state))
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        review = app.screen
        assert isinstance(review, ReviewStep)
        assert review.query_one("#target", Input).value == str(tmp_path / "out-config")
        review.query_one("#target", Input).value = str(tmp_path / "my-configs" / "run-1")
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert isinstance(app.screen, TrainingStep)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert app.screen.query_one("#target", Input).value == str(tmp_path / "my-configs" / "run-1")
