"""`n`, Esc, `o`, a config folder, Enter: the wizard opens on a fresh machine probe without crashing
(the probe's answer used to rebuild the whole step while its header was still being titled)."""
from __future__ import annotations

import shutil
from pathlib import Path

from textual.widgets import Input

from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens import step_hardware
from tuner.tui.screens.home import HomeScreen
from tuner.tui.screens.open_folder import OpenFolder
from tuner.tui.screens.step_hardware import HardwareStep

from test_tui_monitor import text_of
from tui_support import SIZE, no_daemon, settle, unexpected_errors  # noqa: F401

FIXTURE = Path(__file__).parent / "configs" / "simpletuner-sd3"


async def test_new_escape_open_a_folder_enter_opens_the_wizard(tmp_path, monkeypatch):
    shutil.copytree(FIXTURE, tmp_path / "st")
    monkeypatch.chdir(tmp_path / "st")
    # No hardware given, as `tuner-tui` starts: each wizard probes (here a planned 24 GB card, at once).
    monkeypatch.setattr(step_hardware, "probe", lambda path: {**describe(24, 1), "platform": "linux"})
    app = TunerApp()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, HardwareStep)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, HomeScreen)
        await pilot.press("o")
        await pilot.pause()
        assert isinstance(app.screen, OpenFolder)
        app.screen.query_one("#path", Input).value = ""
        await pilot.press(*"config", "enter")
        await settle(pilot)
        step = app.screen
        assert isinstance(step, HardwareStep)
        assert "24.0 GB" in text_of(step.query_one("#hw-table"))   # the probe's answer, shown in place
        assert step.title.startswith(f"Editing {tmp_path / 'st' / 'config'}")
