"""The monitor: a recorded event stream renders, and its keys reach a real tunerd."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path

import pytest

from PIL import Image
from rich.console import Console
from textual.widgets import DataTable, RichLog

from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.home import HomeScreen
from tuner.tui.screens.monitor import MonitorScreen
from tuner.tui.widgets.job_feed import JobFeed
from tuner.tui.widgets.pixel_image import PixelImage

from tui_support import unexpected_errors  # noqa: F401  (fails a test on any error the crash guard caught)

from tuner.daemon import lifecycle

from test_daemon_support import (  # noqa: F401
    daemon, demo_config, demo_template, request, stop_everything, tunerd_env,
)

SIZE = (100, 30)


def text_of(static) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=100, file=io.StringIO(), record=True)
    console.print(static.content)
    return console.export_text()


def png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), colour).save(path)
    return str(path)


def recorded(tmp: Path) -> list[dict]:
    """A short run as tunerd streams it: engine and daemon events, an error, then the end."""
    engine = [
        {"type": "status", "phase": "training"},
        *({"type": "progress", "step": s, "total": 100, "epoch": 1, "loss": 1.0 / s, "lr": 1e-4, "grad_norm": 0.5,
           "steps_per_s": 2.0, "samples_per_s": 8.0, "eta_s": (100 - s) / 2} for s in range(1, 41)),
        {"type": "memory", "devices": [{"name": "GPU", "allocated": 5 << 30, "reserved": 6 << 30, "peak": 7 << 30}],
         "rss": 3 << 30},
        {"type": "preview", "prompt": "a red circle", "nickname": "red_circle", "k": 2, "n": 4, "step": 40,
         "path": png(tmp / "preview.png", (220, 40, 40))},
        {"type": "validation", "prompt": "a blue square", "nickname": "blue_square", "step": 40,
         "paths": [png(tmp / "blue.png", (40, 80, 220))]},
        {"type": "checkpoint", "step": 40, "path": str(tmp / "checkpoint-40")},
        {"type": "error", "message": "CUDA out of memory", "traceback_path": str(tmp / "traceback.txt")},
    ]
    stream = [{"stream": "engine", "event": {"seq": i, "time": 0, **e}} for i, e in enumerate(engine, 1)]
    stream.insert(3, {"stream": "daemon", "event": {"seq": 1, "type": "status", "job_state": "running"}})
    stream.insert(5, {"stream": "daemon", "event": {"seq": 2, "type": "memory", "devices": [
        {"device": "0", "name": "RTX", "used": 20 << 30, "total": 24 << 30}]}})
    stream.append({"end": True, "job": {"state": "failed", "reason": "engine exited with 1"}})
    return stream


async def test_monitor_renders_a_recorded_stream(tmp_path, monkeypatch):
    redraws = []
    render = MonitorScreen.render_progress
    monkeypatch.setattr(MonitorScreen, "render_progress", lambda self: (redraws.append(1), render(self)))
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        screen = MonitorScreen("job-1", follow=False)
        await app.push_screen(screen)
        feed = screen.query_one(JobFeed)
        for message in recorded(tmp_path):
            feed.deliver(message)   # the subscription worker's own path into the app
        await pilot.pause()
        await pilot.pause()
        m = screen.model
        assert m.progress["step"] == 40 and m.state == "failed" and m.ended
        assert m.errors == ["CUDA out of memory"]
        assert feed.seen == {"engine": 46, "daemon": 2}   # a resubscription resumes after these
        assert "step 40/100" in str(screen.query_one("#progress-label").render())
        # Progress redraws coalesce, but the loss chart keeps every step's loss.
        assert list(m.losses) == [1.0 / s for s in range(1, 41)]
        assert len(redraws) < 40
        gauges = text_of(screen.query_one("#memory"))
        assert "GPU 0" in gauges and "RSS" in gauges and "83%" in gauges
        assert screen.query_one("#preview", PixelImage).path.endswith("preview.png")
        assert screen.query_one("#val-0", PixelImage).caption.startswith("blue_square")
        log = "\n".join(str(line.text) for line in screen.query_one(RichLog).lines)
        assert "CUDA out of memory" in log and "checkpoint at step 40" in log and "job ended: failed" in log
        head = text_of(screen.query_one("#job-head"))
        assert "failed" in head and "CUDA out of memory" in head


async def until(pilot, predicate, what: str, timeout: float = 60.0):
    """Let the app run until `predicate()` holds (the feed worker never finishes, so nothing to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await pilot.pause(0.1)


@pytest.fixture
def real_daemon(tunerd_env, monkeypatch):
    """tunerd running the real engine (`python -m tuner.engine`) with this interpreter."""
    monkeypatch.delenv("TUNER_ENGINE_CMD")
    already, info = lifecycle.start()
    assert not already
    yield info
    stop_everything(tunerd_env["data"])


@pytest.mark.slow
async def test_monitor_keys_control_a_real_job(real_daemon, demo_template, tunerd_env):
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=2000, checkpoint_step_interval=0,
                         validation_step_interval=0)
    job = request("submit", path=str(config), cwd=str(config.parent))["job"]["id"]
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        def until_(predicate, what, timeout=120.0):
            return until(pilot, predicate, what, timeout)

        await until_(lambda: isinstance(app.screen, HomeScreen) and app.screen.jobs, "the job list")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, MonitorScreen) and screen.job == job
        await until_(lambda: (screen.model.progress.get("step") or 0) >= 3, "training progress", timeout=240)

        await pilot.press("s")
        await until_(lambda: screen.model.checkpoint, "the checkpoint that 'save now' asked for")
        await pilot.press("p")
        await until_(lambda: screen.model.validations, "the sample that 'sample now' asked for")
        await pilot.press("x")
        await pilot.press("y")
        await until_(lambda: screen.model.ended, "the job to stop")
        assert screen.requests == ["save", "sample", "stop_job"]
        assert screen.model.state == "stopped"
        await pilot.press("d")
        assert isinstance(app.screen, HomeScreen)
        await until_(lambda: any(j["state"] == "stopped" for j in app.screen.jobs), "home to show it stopped")
        assert app.screen.query_one(DataTable).row_count == 1

    shown = request("show", job=job)
    assert shown["job"]["state"] == "stopped" and shown["job"]["reason"].startswith("stopped on request")
    assert shown["checkpoint"] is not None
    # The sample the key asked for was drawn, and its live previews reached the monitor.
    assert Path(next(iter(screen.model.validations.values()))["paths"][0]).is_file()
    assert screen.model.preview.get("path")


async def test_monitor_resubscribes_after_the_daemon_restarts(daemon, demo_template, tunerd_env, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=2000)
    job = request("submit", path=str(config), cwd=str(config.parent))["job"]["id"]
    seen: list[int] = []
    deliver = JobFeed.deliver

    def spy(feed, message):
        if message.get("stream") == "engine":
            seen.append(message["event"]["seq"])
        deliver(feed, message)

    monkeypatch.setattr(JobFeed, "deliver", spy)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        app.open_monitor(job)
        await pilot.pause()
        screen = app.screen
        await until(pilot, lambda: (screen.model.progress.get("step") or 0) >= 3, "training progress")
        os.kill(daemon["pid"], signal.SIGKILL)
        await until(pilot, lambda: screen.sub_title == "tunerd unreachable", "the monitor to notice")
        before = screen.model.progress["step"]
        already, _ = await asyncio.to_thread(lifecycle.start)
        assert not already
        await until(pilot, lambda: screen.sub_title == "" and screen.model.progress["step"] >= before + 5,
                    "progress after the restart")
        # Home's keys act on the highlighted job: stop it, then resume it.
        await pilot.press("d")
        home = app.screen
        assert isinstance(home, HomeScreen)
        # Home polled through the daemon's death too; wait for a list from the restarted one.
        await until(pilot, lambda: [j["state"] for j in home.jobs] == ["running"], "home's job list")
        await pilot.press("x", "y")
        await until(pilot, lambda: [j["state"] for j in home.jobs] == ["stopped"], "home's stop", timeout=30)
        await pilot.press("r")
        await until(pilot, lambda: [j["state"] for j in home.jobs] == ["running"], "home's resume", timeout=30)
        request("cancel", job=job)
    # Every engine event arrived exactly once, in order, across the reconnection.
    assert seen == list(range(1, len(seen) + 1))
    assert request("show", job=job)["job"]["runs"] == 2
