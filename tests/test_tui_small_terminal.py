"""tuner-tui at 80×24, light and dark: every screen's footer shows all its keys, the monitor's log keeps
room with images on screen, and the loss chart has its axes and legend."""
from __future__ import annotations

import pytest
from PIL import Image
from textual.widgets import Footer, Input, RichLog

from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.monitor import MonitorScreen
from tuner.tui.widgets.job_feed import JobFeed
from tuner.tui.widgets.loss_chart import LossChart

from tui_support import no_daemon, settle, unexpected_errors  # noqa: F401

SMALL = (80, 24)
THEMES = ["textual-dark", "textual-light"]


def footer_fits(app) -> None:
    footer = app.screen.query_one(Footer)
    keys = [b.binding.description for b in app.screen.active_bindings.values() if b.binding.show]
    assert footer.virtual_size.width <= footer.size.width, f"{type(app.screen).__name__}: {keys} do not fit"


def png(path, colour) -> str:
    Image.new("RGB", (32, 32), colour).save(path)
    return str(path)


async def recorded_run(pilot, tmp_path) -> MonitorScreen:
    """A monitor showing a run with a preview, validation images, an error and a checkpoint."""
    screen = MonitorScreen("shapes-20261121", follow=False)
    await pilot.app.push_screen(screen)
    feed = screen.query_one(JobFeed)
    feed.deliver({"stream": "daemon", "event": {"seq": 1, "type": "status", "job_state": "running"}})
    events = [{"type": "status", "phase": "training"}]
    events += [{"type": "progress", "step": s, "total": 600, "epoch": 1, "loss": 0.9 - s / 100 + (s % 3) / 20,
                "lr": 5e-4, "grad_norm": 0.4, "steps_per_s": 9.5, "samples_per_s": 38.0, "eta_s": 600 - s}
               for s in range(1, 61)]
    events += [{"type": "preview", "nickname": "red", "k": 3, "n": 4, "step": 60,
                "path": png(tmp_path / "p.png", (220, 40, 40))},
               {"type": "validation", "nickname": "blue", "step": 60, "paths": [png(tmp_path / "v.png", (40, 80, 220))]},
               {"type": "error", "message": "a loss was NaN at step 61"}]
    events += [{"type": "log", "level": "info", "message": f"line {i}"} for i in range(8)]
    for seq, event in enumerate(events, 1):
        feed.deliver({"stream": "engine", "event": {"seq": seq, **event}})
        await pilot.pause()   # one at a time: coalescing would make the chart depend on timing
    await settle(pilot)
    return screen


@pytest.mark.parametrize("theme", THEMES)
async def test_every_screen_fits_80_by_24(tmp_path, theme):
    images = make_dataset(tmp_path / "shapes", count=8)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SMALL) as pilot:
        app.theme = theme
        await settle(pilot)
        footer_fits(app)   # home
        await pilot.press("n")
        await settle(pilot)
        for step in range(7):
            footer_fits(app)
            if step == 3:   # the dataset step: with a folder, and the scan's Fix repeats key on offer
                app.screen.query_one("#folder", Input).value = str(images)
                app.screen.query_one("#in-repeats", Input).value = "0"
                app.screen.rescan()
                await settle(pilot)
                footer_fits(app)
            if step < 6:
                await pilot.press("ctrl+n")
                await settle(pilot)
                if step == 3 and app.screen.query("#in-repeats"):
                    await pilot.press("ctrl+r")
                    app.screen.rescan()
                    await settle(pilot)
                    await pilot.press("ctrl+n")
                    await settle(pilot)
        assert type(app.screen).__name__ == "ReviewStep"

        screen = await recorded_run(pilot, tmp_path)
        footer_fits(app)
        assert screen.query_one("#validations").display
        log = screen.query_one(RichLog)
        assert log.scrollable_content_region.height >= 5, "the log needs more than a line or two"
        chart = screen.query_one(LossChart)
        lines = str(chart.render()).splitlines()
        assert lines[0].strip().startswith("0.") and "┤" in lines[0]           # the value axis, top ...
        assert "┤" in lines[-3]                                                # ... and bottom
        assert "└step 1" in lines[-2] and lines[-2].rstrip().endswith("step 60")   # the step axis
        assert lines[-1].startswith("━ loss · last 0.3000 · lowest")           # the legend
        assert chart.region.width >= 40


@pytest.mark.parametrize("theme", THEMES)
def test_monitor_at_80_by_24(snap_compare, tmp_path, theme):
    async def run(pilot):
        pilot.app.theme = theme
        await recorded_run(pilot, tmp_path)

    assert snap_compare(TunerApp(hardware=describe(24, 1)), terminal_size=SMALL, run_before=run)


@pytest.mark.parametrize("theme", THEMES)
def test_dataset_step_at_80_by_24(snap_compare, theme):
    async def run(pilot):
        pilot.app.theme = theme
        await settle(pilot)
        for key in ("n", "ctrl+n", "ctrl+n", "ctrl+n"):
            await pilot.press(key)
            await settle(pilot)

    assert snap_compare(TunerApp(hardware=describe(24, 1)), terminal_size=SMALL, run_before=run)
