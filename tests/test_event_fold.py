"""One fold for every display: the same events give `tunerd attach` and the TUI's monitor the same picture."""
from __future__ import annotations

import io

from rich.console import Console

from tuner.engine.event_fold import JobView, duration
from tuner.engine.hardware import describe
from tuner.engine.liveview import LiveView
from tuner.tui.app import TunerApp
from tuner.tui.screens.monitor import MonitorScreen
from tuner.tui.widgets.job_feed import JobFeed


def stream() -> list[dict]:
    """A run as tunerd streams it: caching, 30 steps, two rounds of validation, a checkpoint, the end."""
    engine = [
        {"type": "status", "phase": "caching"},
        {"type": "cache", "dataset": "shapes", "kind": "latents", "done": 3, "total": 3},
        {"type": "status", "phase": "training", "message": "step 0 of 30"},
        *({"type": "progress", "step": s, "total": 30, "epoch": 1, "loss": 1.0 / s, "lr": 1e-4,
           "steps_per_s": 2.0, "eta_s": (30 - s) * 7.0} for s in range(1, 16)),
        {"type": "validation", "nickname": "red_circle", "step": 15, "paths": ["/v/15/red.png"]},
        {"type": "validation", "nickname": "blue_square", "step": 15, "paths": ["/v/15/blue.png"]},
        *({"type": "progress", "step": s, "total": 30, "epoch": 2, "loss": 1.0 / s, "lr": 1e-4,
           "steps_per_s": 2.0, "eta_s": (30 - s) * 7.0} for s in range(16, 26)),
        {"type": "memory", "devices": [{"name": "cuda:0", "allocated": 1 << 30, "reserved": 2 << 30, "peak": 3 << 30}],
         "rss": 1 << 29},
        {"type": "validation", "nickname": "red_circle", "step": 25, "paths": ["/v/25/red.png"]},
        {"type": "checkpoint", "step": 25, "path": "/out/checkpoint-25"},
        {"type": "log", "level": "warning", "message": "loss is high"},
    ]
    messages = [{"stream": "engine", "event": {"seq": i, "time": 0, **e}} for i, e in enumerate(engine, 1)]
    messages.insert(1, {"stream": "daemon", "event": {"seq": 1, "type": "status", "job_state": "running",
                                                      "reason": "engine pid 7"}})
    messages.insert(8, {"stream": "daemon", "event": {"seq": 2, "type": "memory", "devices": [
        {"device": "0", "name": "RTX", "used": 20 << 30, "total": 24 << 30}]}})
    messages.append({"end": True, "job": {"state": "stopped", "reason": "stopped on request"}})
    return messages


def folded() -> JobView:
    view = JobView()
    for message in stream():
        view.apply_message(message)
    return view


def test_the_fold_keeps_what_a_watcher_needs():
    view = folded()
    assert (view.state, view.reason, view.ended) == ("stopped", "stopped on request", True)
    assert view.phase == "training" and view.message == ""   # progress made "step 0 of 30" stale
    assert (view.step, view.total) == (25, 30) and duration(view.eta_s) == "0:00:35"
    assert list(view.losses) == [1.0 / s for s in range(1, 26)]
    # The newest drawn validation comes last, and each prompt shows its latest sample.
    assert [nick for nick, _ in view.latest_validations(3)] == ["blue_square", "red_circle"]
    assert view.latest_validation_path == "/v/25/red.png"
    assert view.checkpoint["step"] == 25 and view.cache["total"] == 3
    assert view.rss == 1 << 29 and view.engine_memory[0]["peak"] == 3 << 30
    assert view.gpu_memory[0]["name"] == "RTX"
    assert "job running: engine pid 7" in view.log and "warning: loss is high" in view.log
    assert view.log[-1] == "job ended: stopped (stopped on request)"


def test_errors_and_the_result_are_kept():
    view = JobView()
    assert view.apply({"type": "error", "message": "CUDA out of memory", "traceback_path": "/j/tb.txt"}) == \
        "error: CUDA out of memory (traceback: /j/tb.txt)"
    view.apply({"type": "done", "step": 8, "paths": {"pipeline": "/out/pipeline"}})
    assert view.errors == ["CUDA out of memory"] and view.result == {"pipeline": "/out/pipeline"}
    assert view.log[-1] == "done at step 8: pipeline in /out/pipeline"
    assert view.latest_validation_path is None and view.latest_validations(3) == []


def rendered(live: LiveView) -> str:
    console = Console(width=140, file=io.StringIO(), record=True)
    console.print(live)
    return console.export_text()


async def test_attach_and_the_monitor_fold_one_stream_into_the_same_state(monkeypatch):
    live = LiveView(title="tunerd attach j1")
    for message in stream():
        live.feed_message(message)

    redraws = []
    render = MonitorScreen.render_progress
    monkeypatch.setattr(MonitorScreen, "render_progress", lambda self: (redraws.append(1), render(self)))
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = MonitorScreen("j1", follow=False)
        await app.push_screen(screen)
        feed = screen.query_one(JobFeed)
        for message in stream():
            feed.deliver(message)   # all at once: the monitor's progress messages coalesce
        await pilot.pause()
        await pilot.pause()
        assert screen.model.ended
        assert len(redraws) < 25   # redraws were dropped …
        assert screen.model == live.job   # … but both folded every event, in the same order
        label = str(screen.query_one("#progress-label").render())
        assert "step 25/30" in label and "ETA 0:00:35" in label
        assert screen.query_one("#val-1").path == live.job.latest_validation_path == "/v/25/red.png"

    text = rendered(live)
    for expected in ("25/30", "0:00:35", "/v/25/red.png", "/v/15/blue.png", "stopped on request"):
        assert expected in text, expected


def test_attach_draws_the_latest_samples_as_pictures_in_the_terminal(tmp_path):
    from PIL import Image, ImageDraw

    red = tmp_path / "red_circle-64x64.png"
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=(220, 20, 20))
    image.save(red)
    live = LiveView(title="tunerd attach j1")
    live.feed({"seq": 1, "type": "validation", "step": 40, "nickname": "red_circle", "paths": [str(red)]})
    console = Console(width=100, file=io.StringIO(), record=True, color_system="truecolor")
    console.print(live)
    text, styled = console.export_text(clear=False), console.export_text(styles=True)
    assert "red_circle, step 40" in text and text.count("▀") == 20 * 10  # 20 columns, 20 pixel rows
    assert "220;20;20" in styled or "rgb(220,20,20)" in styled  # the circle's red reaches the terminal
    assert "255;255;255" in styled  # and the white background


def test_the_end_of_a_run_says_where_the_weights_and_the_tensorboard_logs_are():
    view = JobView()
    view.apply({"type": "done", "step": 8, "paths": {"pipeline": "/out/pipeline", "tensorboard": "/out/tensorboard/r"}})
    assert view.log[-1] == ("done at step 8: pipeline in /out/pipeline; TensorBoard: tensorboard --logdir "
                            "/out/tensorboard/r")
