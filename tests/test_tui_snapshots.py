"""SVG snapshots of the main screens (pytest-textual-snapshot); `--snapshot-update` after a deliberate change."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.monitor import MonitorScreen
from tuner.tui.widgets.job_feed import JobFeed

from tui_support import unexpected_errors  # noqa: F401  (fails a test on any error the crash guard caught)

pytest.importorskip("pytest_textual_snapshot")
SIZE = (100, 30)
FIXED = Path("/tmp/tuner-tui-snapshots")   # paths show on screen: keep them the same on every run


@pytest.fixture(autouse=True)
def no_daemon(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNER_RUNTIME_DIR", str(tmp_path / "run"))


async def settle(pilot) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_home_without_daemon(snap_compare):
    assert snap_compare(TunerApp(hardware=describe(24, 1)), terminal_size=SIZE, run_before=settle)


def test_wizard_preset_step(snap_compare):
    async def to_presets(pilot):
        await settle(pilot)
        for key in ("n", "ctrl+n", "ctrl+n"):
            await pilot.press(key)
            await settle(pilot)

    assert snap_compare(TunerApp(hardware=describe(12, 1)), terminal_size=SIZE, run_before=to_presets)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_review(snap_compare, theme):
    from tuner.tui.wizard_state import WizardState, new_dataset
    from tuner.tui.screens.step_review import ReviewStep

    images = make_dataset(FIXED / "shapes", count=4)
    dataset = {**new_dataset(), "instance_data_dir": str(images)}
    state = WizardState(hardware=describe(24, 1), datasets=[dataset], prompts={"red": "a red circle"},
                        config={"model_family": "sana", "model_type": "full", "output_dir": str(FIXED / "out"),
                                "pretrained_model_name_or_path": "terminusresearch/sana-1.6b-1024px",
                                "max_train_steps": 100, "validation_prompt": "a red circle"})

    async def to_review(pilot):
        pilot.app.theme = theme
        await pilot.app.push_screen(ReviewStep(state))
        await settle(pilot)

    assert snap_compare(TunerApp(hardware=describe(24, 1)), terminal_size=SIZE, run_before=to_review)


def test_monitor(snap_compare):
    preview = FIXED / "preview.png"
    preview.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", (32, 32), (245, 245, 245))
    img.paste((220, 40, 40), (8, 8, 24, 24))
    img.save(preview)

    async def monitor(pilot):
        screen = MonitorScreen("shapes-20261121", follow=False)
        await pilot.app.push_screen(screen)
        feed = screen.query_one(JobFeed)
        feed.deliver({"stream": "daemon", "event": {"seq": 1, "type": "status", "job_state": "running"}})
        events = [{"type": "status", "phase": "training"}]
        events += [{"type": "progress", "step": s, "total": 600, "epoch": 1, "loss": 0.9 - s / 100 + (s % 3) / 20,
                    "lr": 5e-4, "grad_norm": 0.4, "steps_per_s": 9.5, "samples_per_s": 38.0, "eta_s": 600 - s}
                   for s in range(1, 61)]
        events += [{"type": "preview", "nickname": "red_circle", "k": 3, "n": 4, "step": 60, "path": str(preview)},
                   {"type": "log", "level": "info", "message": "caching done"}]
        for seq, event in enumerate(events, 1):
            feed.deliver({"stream": "engine", "event": {"seq": seq, **event}})
            # Deliver one at a time: coalescing otherwise makes the chart depend on timing.
            await pilot.pause()
        # GPU readings come from tunerd (NVML); RSS is left out, its gauge depends on this machine's RAM.
        feed.deliver({"stream": "daemon", "event": {"seq": 2, "type": "memory", "devices": [
            {"device": "0", "name": "RTX 4090", "used": 18 << 30, "total": 24 << 30}]}})
        await settle(pilot)

    app = TunerApp(hardware=describe(24, 1))
    assert snap_compare(app, terminal_size=SIZE, run_before=monitor)
