"""Shared fixtures for the tunerd tests: a real daemon process on a private data dir and socket,
a stand-in engine for fast lifecycle tests, and small helpers. (No tests of its own.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tuner.daemon import lifecycle
from tuner.daemon.client import Client

REPO = Path(__file__).resolve().parents[1]

# Behaves like `python -m tuner.engine JOB_DIR` from the daemon's side: events with the same
# types and phases, control requests obeyed between steps (and deleted), checkpoints as
# output_dir/checkpoint-N, resume_from_checkpoint=latest, exit 0 done / 3 stopped. Each step
# takes STEP_SECONDS so tests can act mid-run.
FAKE_ENGINE = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    from tuner.engine.events import EventWriter
    from tuner.engine import jobdir

    job = Path(sys.argv[1])
    step_seconds = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    config = json.loads((job / "config.json").read_text())
    total = int(config.get("max_train_steps") or 20)
    every = int(config.get("checkpoint_step_interval") or 0)
    out = Path(config["output_dir"])
    ev = EventWriter(job / "events.jsonl")
    ev.emit("status", phase="loading")
    print("fake engine: loading", flush=True)
    start = 0
    if config.get("resume_from_checkpoint") == "latest":
        steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")]
        start = max(steps, default=0)
        ev.emit("log", level="info", message=f"resumed from step {start}")

    def save(step):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "state.json").write_text(json.dumps({"step": step}))
        ev.emit("checkpoint", step=step, path=str(folder))

    ev.emit("status", phase="training")
    for step in range(start + 1, total + 1):
        time.sleep(step_seconds)
        ev.emit("progress", step=step, total=total, epoch=1, loss=1.0 / step, lr=1e-4, grad_norm=0.1,
                steps_per_s=1 / step_seconds, samples_per_s=1 / step_seconds, eta_s=(total - step) * step_seconds)
        print(f"step {step}", flush=True)
        if every and step % every == 0:
            save(step)
        for name in jobdir.pending_requests(job):
            jobdir.clear_request(job, name)
            if name == "save":
                save(step)
            elif name == "sample":
                ev.emit("validation", prompt="p", nickname="n", step=step, paths=[str(out / f"v{step}.png")])
            elif name == "stop":
                save(step)
                ev.emit("status", phase="stopped", message="stop requested")
                sys.exit(3)
    save(total)
    ev.emit("status", phase="done")
    ev.emit("done", step=total, paths={})
    sys.exit(0)
''')


@pytest.fixture
def tunerd_env(tmp_path, monkeypatch):
    """TUNER_DATA_DIR / TUNER_RUNTIME_DIR in tmp_path, and the stand-in engine, for this test."""
    data, run = tmp_path / "data", tmp_path / "run"
    engine = tmp_path / "fake_engine.py"
    engine.write_text(FAKE_ENGINE)
    monkeypatch.setenv("TUNER_DATA_DIR", str(data))
    monkeypatch.setenv("TUNER_RUNTIME_DIR", str(run))
    monkeypatch.setenv("TUNER_ENGINE_CMD", json.dumps([sys.executable, str(engine)]))
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the daemon hands out no GPUs in these tests
    return {"data": data, "run": run, "tmp": tmp_path}


@pytest.fixture
def daemon(tunerd_env):
    """A running tunerd (a real background process); stopped, with every engine it ran, at the end."""
    already, info = lifecycle.start()
    assert not already
    yield info
    stop_everything(tunerd_env["data"])


def stop_everything(data: Path) -> None:
    """Kill the daemon and every engine under `data` (tests must not leak processes)."""
    status = lifecycle.read_status()
    targets = [(status["pid"], None)] if status else []
    for record in (data / "jobs").glob("*/job.json"):
        job = json.loads(record.read_text())
        if job.get("pid"):
            targets.append((job["pid"], job.get("create_time")))
    for pid, started in targets:
        if pid == os.getpid():
            continue  # a test that played the engine itself
        try:
            proc = psutil.Process(pid)
            if started is not None and abs(proc.create_time() - started) > 0.01:
                continue  # the pid was reused by something that is not ours
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)  # the engine's session: its workers too
            else:
                proc.kill()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue  # already gone


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def request(verb: str, **args):
    with Client(timeout=30) as client:
        return client.request(verb, **args)


def job_state(job_id: str) -> str:
    return request("show", job=job_id)["job"]["state"]


def wait_state(job_id: str, *states: str, timeout: float = 60.0) -> dict:
    def check():
        job = request("show", job=job_id)["job"]
        return job if job["state"] in states else None
    return wait_for(check, timeout, 0.1, f"job {job_id} to reach {states}")


def tunerd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the `tunerd` command line as a user would."""
    return subprocess.run([sys.executable, "-m", "tuner.daemon.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory):
    """A complete demo config folder (tiny Sana, generated dataset), built once per session."""
    demo = pytest.importorskip("tuner.presets.demo")
    folder = tmp_path_factory.mktemp("demo")
    demo.write_demo_config(folder, steps=20)
    return folder


def demo_config(template: Path, where: Path, **overrides) -> Path:
    """A private copy of the demo config folder with config.json keys overridden."""
    target = where / "demo"
    shutil.copytree(template, target, symlinks=True)
    config_dir = target / "config"
    # The demo writes absolute paths into its template; point them at this copy.
    for name in ("config.json", "multidatabackend.json", "user_prompt_library.json"):
        path = config_dir / name
        path.write_text(path.read_text().replace(str(template), str(target)))
    config = json.loads((config_dir / "config.json").read_text())
    config.update(overrides)
    (config_dir / "config.json").write_text(json.dumps(config, indent=2))
    return config_dir
