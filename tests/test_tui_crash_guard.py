"""An unexpected error anywhere in tuner-tui is a dialog naming its log; the app and what was typed live on."""
from __future__ import annotations

from textual.widgets import Input

from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.crash import CrashDialog, log_path
from tuner.tui.screens.step_model import ModelStep
from tuner.tui.screens.step_preset import PresetStep
from tuner.tui.screens.step_review import ReviewStep
from tuner.tui.wizard_state import WizardState

from tui_support import SIZE, no_daemon, settle, unexpected_errors  # noqa: F401


def dialog_text(app) -> str:
    return " ".join(str(w.render()) for w in app.screen.query("#dialog Static"))


async def test_an_error_in_a_worker_is_a_dialog_with_the_log_and_the_review_stays(tmp_path, monkeypatch,
                                                                                 unexpected_errors):
    def broken(state):
        raise RuntimeError("the check broke")

    monkeypatch.setattr(WizardState, "check", broken)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        review = ReviewStep(WizardState(hardware=describe(24, 1)))
        await app.push_screen(review)
        await settle(pilot)
        assert isinstance(app.screen, CrashDialog)
        assert str(log_path()) in dialog_text(app) and "RuntimeError: the check broke" in dialog_text(app)
        assert str(log_path()).startswith(str(tmp_path / "data"))
        log = log_path().read_text()
        assert "Traceback" in log and "RuntimeError: the check broke" in log and "def broken" not in log
        assert "in broken" in log
        await pilot.press("enter")
        assert app.is_running and app.screen is review
        # The review still answers keys: the path typed stays and can be changed.
        review.query_one("#target", Input).value = str(tmp_path / "here")
        await pilot.press("ctrl+w")   # the check never finished, so writing says so
        await settle(pilot)
        assert "the check is still running" in str(review.query_one("#step-problems").render())
    assert [type(e).__name__ for e in unexpected_errors] == ["WorkerFailed"]
    unexpected_errors.clear()


async def test_an_error_in_an_action_keeps_the_step_and_what_was_typed(monkeypatch, unexpected_errors):
    def broken(step):
        raise KeyError("no such thing")

    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("ctrl+n")
        await settle(pilot)
        step = app.screen
        assert isinstance(step, ModelStep)
        step.query_one("#model", Input).value = "my-org/my-model"
        monkeypatch.setattr(ModelStep, "save", broken)
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, CrashDialog) and "KeyError" in dialog_text(app)
        await pilot.press("escape")
        assert app.screen is step and step.query_one("#model", Input).value == "my-org/my-model"
        # The step's own message loop still runs: a second failure is a second dialog, not the app's end.
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, CrashDialog)
        await pilot.press("enter")
        monkeypatch.undo()
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, PresetStep)
        assert app.screen.state.config["pretrained_model_name_or_path"] == "my-org/my-model"
    assert len(unexpected_errors) == 2
    unexpected_errors.clear()


async def test_a_step_that_fails_to_open_is_left_and_the_one_before_keeps_its_values(monkeypatch,
                                                                                    unexpected_errors):
    def broken(step):
        raise ValueError("cannot build the preset list")

    monkeypatch.setattr(PresetStep, "body", broken)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in ("n", "ctrl+n"):
            await pilot.press(key)
            await settle(pilot)
        model = app.screen
        model.query_one("#model", Input).value = "my-org/my-model"
        await pilot.press("ctrl+n")
        await settle(pilot)
        assert isinstance(app.screen, CrashDialog) and "cannot build the preset list" in dialog_text(app)
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running and app.screen is model
        assert model.query_one("#model", Input).value == "my-org/my-model"
    assert unexpected_errors
    unexpected_errors.clear()
