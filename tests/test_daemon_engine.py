"""tunerd with the real engine (`python -m tuner.engine`) training the tiny demo Sana on the CPU."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from tuner.daemon import lifecycle, paths
from tuner.daemon.client import Client

from test_daemon_support import (  # noqa: F401
    demo_config, demo_template, request, stop_everything, tunerd, tunerd_env, wait_for, wait_state,
)

pytest.importorskip("tuner.presets.demo", reason="the demo config is not there yet")
pytestmark = pytest.mark.slow


@pytest.fixture
def real_daemon(tunerd_env, monkeypatch):
    """tunerd running the real engine with this interpreter."""
    monkeypatch.delenv("TUNER_ENGINE_CMD")
    already, info = lifecycle.start()
    assert not already
    yield info
    stop_everything(tunerd_env["data"])


def events(job_id: str) -> list[dict]:
    path = paths.jobs_dir() / job_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def steps(job_id: str) -> list[int]:
    return [e["step"] for e in events(job_id) if e["type"] == "progress"]


def submit(config: Path) -> str:
    return request("submit", path=str(config), cwd=str(config.parent))["job"]["id"]


def test_stop_job_leaves_a_checkpoint_and_resume_continues_at_the_next_step(real_daemon, demo_template, tunerd_env):
    # Few inference steps: the final validation is not what this test is about.
    # Stopped at its first reported step, so stop-job arrives mid-run on a fast, quiet machine too.
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=100, checkpoint_step_interval=1000,
                         validation_step_interval=1000, validation_num_inference_steps=2, validation_preview=False)
    job_id = submit(config)
    wait_for(lambda: len(steps(job_id)) >= 1, timeout=180, interval=0.1, what="training to start")
    assert tunerd("stop-job", job_id).returncode == 0
    job = wait_state(job_id, "stopped", timeout=120)
    assert job["reason"].startswith("stopped on request")
    checkpoints = [e for e in events(job_id) if e["type"] == "checkpoint"]
    assert checkpoints, "stop-job must leave a checkpoint"
    stopped_at = checkpoints[-1]["step"]
    assert Path(checkpoints[-1]["path"]).is_dir()
    before = len(steps(job_id))
    assert tunerd("resume", job_id).returncode == 0
    wait_state(job_id, "done", timeout=300)
    after = steps(job_id)[before:]
    assert after[0] == stopped_at + 1 and after[-1] == 100
    with Client() as client:
        seqs = [m["event"]["seq"] for m in client.subscribe(job_id) if m.get("stream") == "engine"]
    assert seqs == list(range(1, len(events(job_id)) + 1))


def test_engine_outlives_a_killed_daemon_and_a_killed_engine_is_interrupted(real_daemon, demo_template, tunerd_env):
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=400, checkpoint_step_interval=4,
                         validation_step_interval=1000)
    job_id = submit(config)
    wait_for(lambda: len(steps(job_id)) >= 2, timeout=180, interval=0.2, what="training to start")
    engine = request("show", job=job_id)["job"]["pid"]
    os.kill(real_daemon["pid"], signal.SIGKILL)
    seen = len(steps(job_id))
    wait_for(lambda: len(steps(job_id)) >= seen + 3, timeout=60, interval=0.2, what="training without the daemon")
    result = tunerd("start")
    assert "tunerd started" in result.stdout, result.stdout + result.stderr
    assert request("show", job=job_id)["job"]["state"] == "running"
    wait_for(lambda: [e for e in events(job_id) if e["type"] == "checkpoint"], timeout=120, what="a checkpoint")
    os.killpg(engine, signal.SIGKILL)
    job = wait_state(job_id, "interrupted", timeout=30)
    # Re-adopted, the engine is no longer tunerd's child: its exit status is gone, not its end.
    assert "re-adopted" in job["reason"] and f"tunerd resume {job_id}" in job["reason"]
    assert not psutil.pid_exists(engine) or psutil.Process(engine).status() == psutil.STATUS_ZOMBIE
    latest = [e for e in events(job_id) if e["type"] == "checkpoint"][-1]["step"]
    before = len(steps(job_id))
    request("resume", job=job_id)
    wait_for(lambda: len(steps(job_id)) > before, timeout=180, interval=0.2, what="the resumed run to train")
    assert steps(job_id)[before] == latest + 1
    assert tunerd("cancel", job_id).returncode == 0
    assert wait_state(job_id, "stopped", timeout=30)["reason"] == "cancelled"
    # Three engine runs and a daemon restart later, the stream still holds every event once.
    with Client() as client:
        seqs = [m["event"]["seq"] for m in client.subscribe(job_id) if m.get("stream") == "engine"]
    assert seqs == list(range(1, len(events(job_id)) + 1))
