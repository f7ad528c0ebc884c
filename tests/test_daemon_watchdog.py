"""An engine that is alive but sends nothing is marked stalled, shown so, and (when asked) stopped.

The test process plays the engine, as in test_daemon_subscribe: the job's record names a `sleep`
process that the daemon adopts, and the test writes (or does not write) its events.
"""
from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from tuner.daemon import lifecycle, paths
from tuner.daemon import protocol as p
from tuner.daemon.jobs import Job
from tuner.engine.events import EventWriter, read_events

from test_daemon_subscribe import stop_daemon
from test_daemon_support import request, tunerd_env, wait_for, wait_state  # noqa: F401

JOB = "20261202-000000-hung"


def hung_job(action: str):
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    folder = paths.jobs_dir() / JOB
    folder.mkdir(parents=True)
    # 0.02 min: the watchdog's limit is 1.2 s of silence while training.
    (folder / "config.json").write_text(json.dumps({"--stall_timeout_minutes": 0.02, "stall_action": action}))
    Job(id=JOB, dir=str(folder), state=p.RUNNING, pid=sleeper.pid,
        create_time=psutil.Process(sleeper.pid).create_time(), output_dir=str(folder / "out")).save()
    writer = EventWriter(folder / "events.jsonl")
    writer.emit("status", phase="training")
    lifecycle.start()
    return writer, sleeper, folder


def stall_events(folder):
    return [e for e in read_events(folder / "daemon-events.jsonl") if "stalled" in e]


@pytest.fixture
def cleanup():
    made = []
    yield made
    for sleeper in made:
        sleeper.kill()
        sleeper.wait()
    stop_daemon()


def test_a_silent_engine_is_marked_stalled_in_list_and_unmarked_when_it_speaks(tunerd_env, cleanup) -> None:
    writer, sleeper, folder = hung_job("warn")
    cleanup.append(sleeper)
    wait_for(lambda: request("show", job=JOB)["job"]["stalled"], 20, what="the job to be marked stalled")
    listed = subprocess.run([sys.executable, "-m", "tuner.daemon.cli", "list"], capture_output=True, text=True)
    line = next(line for line in listed.stdout.splitlines() if line.startswith(JOB))
    assert "running, stalled" in line and "no event from the engine for" in line and "while training" in line
    [marked] = stall_events(folder)
    assert marked["stalled"] and f"tunerd cancel {JOB}" in marked["message"]
    assert request("show", job=JOB)["job"]["state"] == p.RUNNING  # warn only: it is left running
    writer.emit("progress", step=1, total=10, loss=0.5)  # it speaks again
    wait_for(lambda: not request("show", job=JOB)["job"]["stalled"], 20, what="the mark to be cleared")
    assert [e["stalled"] for e in stall_events(folder)] == [True, False]


def test_stall_action_stop_ends_the_job_resumable(tunerd_env, cleanup) -> None:
    writer, sleeper, folder = hung_job("stop")
    cleanup.append(sleeper)
    job = wait_state(JOB, p.STOPPED, timeout=40)
    assert job["reason"].startswith("stopped by the watchdog: no event from the engine")
    assert f"tunerd resume {JOB}" in job["reason"]
    assert sleeper.wait(timeout=20) is not None  # the hung engine was ended


def test_stop_job_force_ends_a_stalled_engine(tunerd_env, cleanup) -> None:
    writer, sleeper, folder = hung_job("warn")
    cleanup.append(sleeper)
    wait_for(lambda: request("show", job=JOB)["job"]["stalled"], 20, what="the job to be marked stalled")
    out = subprocess.run([sys.executable, "-m", "tuner.daemon.cli", "stop-job", JOB, "--force"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "SIGTERM" in out.stdout
    job = wait_state(JOB, p.STOPPED, timeout=40)
    assert job["reason"].startswith("stopped by the watchdog")
