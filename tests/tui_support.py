"""What the TUI tests share: a private tunerd location, waiting for the app, and the crash guard's watch."""
from __future__ import annotations

import traceback

import pytest

from tuner.tui.app import TunerApp

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def no_daemon(tmp_path, monkeypatch):
    """A private data dir and socket, so no user's tunerd answers these tests."""
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNER_RUNTIME_DIR", str(tmp_path / "run"))


@pytest.fixture(autouse=True)
def unexpected_errors(monkeypatch):
    """The errors the crash guard caught during the test. The guard keeps the app alive, so a test could
    pass over a crash: any error left here at the end fails the test (one that expects some clears them)."""
    caught: list[BaseException] = []
    report = TunerApp.report_crash

    def watched(app, error):
        caught.append(error)
        report(app, error)

    monkeypatch.setattr(TunerApp, "report_crash", watched)
    yield caught
    assert not caught, "the crash guard caught:\n" + "\n".join(
        "".join(traceback.format_exception(e)) for e in caught)


async def settle(pilot) -> None:
    """Let the app handle what is queued and finish its workers."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def problem_at(screen, key: str) -> str | None:
    """The problem the field for `key` shows (None when it shows none)."""
    return screen.query_one(f"#field-{key}").problem


def problems_text(screen) -> str:
    """The list of problems under a step's form, as text."""
    return str(screen.query_one("#step-problems").render())


async def keys(pilot, *pressed: str) -> None:
    """Press each key as a user would, letting the app settle after every one (screens open, workers end)."""
    for key in pressed:
        await pilot.press(key)
        await settle(pilot)
