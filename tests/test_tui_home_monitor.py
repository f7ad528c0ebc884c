"""Home and the monitor as a user meets them: the newest job under the cursor, keys that follow the job's
state, the daemon's absence said once, and where the weights are at the end."""
from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import DataTable, RichLog

from tuner.daemon import protocol as p
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.home import HomeScreen
from tuner.tui.screens.monitor import MonitorScreen
from tuner.tui.widgets.job_feed import JobFeed

from test_daemon_support import daemon, demo_config, demo_template, request, tunerd_env, wait_state  # noqa: F401
from test_tui_monitor import text_of, until
from tui_support import SIZE, settle, unexpected_errors  # noqa: F401


def head_of(screen) -> str:
    """The monitor's head as one line of text."""
    return " ".join(text_of(screen.query_one("#job-head")).split())


def footer_keys(app) -> set[str]:
    """The actions the footer offers now."""
    return {b.binding.action for b in app.active_bindings.values() if b.binding.show and b.enabled}


def submit(demo_template, where, **config) -> str:
    folder = demo_config(demo_template, where, **config)
    return request("submit", path=str(folder), cwd=str(folder.parent))["job"]["id"]


async def test_home_puts_the_newest_job_under_the_cursor_and_says_the_keys_as_they_are(daemon, demo_template,
                                                                                        tunerd_env):
    tmp = tunerd_env["tmp"]
    older = submit(demo_template, tmp / "a", max_train_steps=3)
    wait_state(older, p.DONE)
    newer = submit(demo_template, tmp / "b", max_train_steps=3)
    wait_state(newer, p.DONE)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, HomeScreen) and len(app.screen.jobs) == 2, "the jobs")
        home = app.screen
        table = home.query_one(DataTable)
        assert [j["id"] for j in home.jobs] == [newer, older] and table.cursor_row == 0
        model = str(table.get_row_at(0)[3])
        assert model and ": " not in model and model != "sana: sana"
        assert "n starts a new training; o opens a config folder" in str(home.query_one("#hint").render())
        # The cursor stays on the job the user chose when the list refreshes.
        await pilot.press("down")
        await until(pilot, lambda: table.cursor_row == 1, "the cursor")
        home.fetch()
        await pilot.pause(0.3)
        assert table.cursor_row == 1
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen) and app.screen.job == older


async def test_the_monitor_of_an_ended_job_offers_resume_not_stop_and_says_where_the_weights_are(
        daemon, demo_template, tunerd_env, monkeypatch):
    tmp = tunerd_env["tmp"]
    done = submit(demo_template, tmp / "done", max_train_steps=3)
    finished = wait_state(done, p.DONE)
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")   # (the daemon read it at start: only new engines see it)
    stopped = submit(demo_template, tmp / "stopped", max_train_steps=400)
    wait_state(stopped, p.RUNNING)
    time.sleep(0.5)
    request("stop_job", job=stopped)
    wait_state(stopped, p.STOPPED)
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_monitor(done)
        await pilot.pause()
        screen = app.screen
        await until(pilot, lambda: screen.model.ended, "the done job's end")
        assert f"weights: {finished['output_dir']}/pipeline" in head_of(screen)
        assert not {"stop", "control", "resume"} & footer_keys(app)
        assert not app._notifications   # an end long past is no news
        await pilot.press("d")
        await pilot.pause()

        app.open_monitor(stopped)
        await pilot.pause()
        screen = app.screen
        await until(pilot, lambda: screen.model.ended, "the stopped job's end")
        keys = footer_keys(app)
        assert "resume" in keys and "stop" not in keys and "control" not in keys
        assert "(r resumes from it)" in head_of(screen)
        await pilot.press("x")   # not offered: nothing happens, no error
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("r")
        await until(pilot, lambda: screen.model.state in p.ACTIVE_STATES and not screen.model.ended,
                    "the resumed run")
        assert "stop" in footer_keys(app) and "resume" not in footer_keys(app)
        request("cancel", job=stopped)
        await until(pilot, lambda: screen.model.ended, "the cancel")


async def test_tunerd_down_is_one_status_line_not_a_log_line_per_try():
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=SIZE) as pilot:
        screen = MonitorScreen("job-1", follow=False)
        await app.push_screen(screen)
        feed = screen.query_one(JobFeed)
        feed.deliver({"stream": "daemon", "event": {"seq": 1, "type": "status", "job_state": "running"}})
        feed.deliver({"stream": "engine", "event": {"seq": 1, "type": "progress", "step": 5, "total": 10,
                                                     "loss": 0.5, "eta_s": 30}})
        for _ in range(6):   # what the feed posts once a second while tunerd is away
            feed.post_message(JobFeed.Connection(False, "lost tunerd (connection refused); reconnecting"))
        await pilot.pause()
        log = [str(line.text) for line in screen.query_one(RichLog).lines]
        assert sum("lost tunerd" in line for line in log) == 1
        head = head_of(screen)
        assert "running?" in head and "tunerd unreachable" in head and "try 6" in head and "last known" in head
        feed.post_message(JobFeed.Connection(True))
        await pilot.pause()
        assert "unreachable" not in head_of(screen)
        assert "tunerd is back" in str(screen.query_one(RichLog).lines[-1].text)
