"""The folder picker starts where tuner-tui runs and takes a relative path; the palette's screenshot works
without a ~/Downloads."""
from __future__ import annotations

from textual.command import CommandList
from textual.widgets import DirectoryTree, Input

from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.open_folder import OpenFolder

from tui_support import SIZE, no_daemon, settle, unexpected_errors  # noqa: F401
from test_tui_monitor import until


async def test_the_picker_opens_where_tuner_tui_runs_and_a_relative_path_opens_from_there(tmp_path, monkeypatch):
    (tmp_path / "work" / "configs" / "run-1").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    chosen = []
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.push_screen(OpenFolder("Open a config folder"), chosen.append)
        await pilot.pause()
        picker = app.screen
        assert picker.query_one("#path", Input).value == f"{tmp_path / 'work'}/"
        assert picker.query_one(DirectoryTree).path == tmp_path / "work"
        picker.query_one("#path", Input).value = ""
        await pilot.press(*"configs/nope", "enter")
        await pilot.pause()
        assert app.screen is picker   # not a folder: said, and the dialog stays
        picker.query_one("#path", Input).value = ""
        await pilot.press(*"configs/run-1", "enter")
        await pilot.pause()
        assert chosen == [str(tmp_path / "work" / "configs" / "run-1")]


async def test_a_picker_started_from_a_folder_shows_its_neighbours(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir()
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await app.push_screen(OpenFolder("Choose the dataset folder", str(tmp_path / "data" / "cats")))
        await pilot.pause()
        assert app.screen.query_one("#path", Input).value == str(tmp_path / "data" / "cats")
        assert app.screen.query_one(DirectoryTree).path == tmp_path / "data"


async def test_the_palettes_screenshot_is_saved_where_tuner_tui_runs_when_there_is_no_downloads_folder(
        tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))   # a home without ~/Downloads
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"screenshot")
        await until(pilot, lambda: app.screen.query_one(CommandList).option_count, "the palette's match")
        await pilot.press("enter")
        await until(pilot, lambda: list((tmp_path / "work").glob("*.svg")), "the screenshot", timeout=10)
        assert not (tmp_path / "home" / "Downloads").exists()
