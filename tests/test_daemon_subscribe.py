"""subscribe: every event after since_seq, once, in order, to every client, across reconnects.

The test process plays the engine: it makes a job directory whose record names a live process
(a `sleep`), so the daemon re-adopts it on start, and then appends to its events.jsonl itself.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from tuner.daemon import lifecycle, paths
from tuner.daemon import protocol as p
from tuner.daemon.client import AsyncClient, Client
from tuner.daemon.jobs import Job
from tuner.engine.events import EventWriter

from test_daemon_support import request, tunerd_env, wait_for, wait_state  # noqa: F401

JOB = "20261121-000000-played"


@pytest.fixture
def played(tunerd_env):
    """A 'running' job whose engine is a sleep process and whose events this test writes."""
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    folder = paths.jobs_dir() / JOB
    folder.mkdir(parents=True)
    job = Job(id=JOB, dir=str(folder), state=p.RUNNING, pid=sleeper.pid,
              create_time=psutil.Process(sleeper.pid).create_time(), output_dir=str(folder / "out"))
    job.save()
    writer = EventWriter(folder / "events.jsonl")
    writer.emit("status", phase="training")
    already, _ = lifecycle.start()
    assert not already
    yield writer, sleeper
    sleeper.kill()
    sleeper.wait()
    stop_daemon()


def stop_daemon() -> None:
    """Stop the daemon; one that does not exit in time leaves its thread stacks in the failure."""
    status = lifecycle.read_status()
    try:
        lifecycle.stop(timeout=10)
    except p.DaemonNotRunning:
        return  # a test stopped it already
    except RuntimeError:
        os.kill(status["pid"], signal.SIGUSR1)
        time.sleep(0.5)
        os.kill(status["pid"], signal.SIGKILL)
        raise AssertionError("tunerd did not stop:\n" + paths.daemon_log().read_text()[-6000:])


def collect(since: int, until: int, out: list, ready: threading.Event) -> None:
    """Subscribe and keep engine events until seq `until` arrives."""
    with Client(timeout=30) as client:
        for message in client.subscribe(JOB, since_seq=since):
            if message.get("ok"):
                ready.set()
            elif message.get("stream") == "engine":
                out.append(message["event"]["seq"])
                if message["event"]["seq"] >= until:
                    return


def test_ten_subscribers_get_the_whole_stream_in_order(played):
    writer, _ = played
    for i in range(50):
        writer.emit("progress", step=i, total=300, loss=1.0)
    results = [[] for _ in range(10)]
    readies = [threading.Event() for _ in range(10)]
    threads = [threading.Thread(target=collect, args=(0, 301, results[i], readies[i])) for i in range(10)]
    for t in threads:
        t.start()
    # Half the stream is written while the subscribers are catching up or following.
    for i in range(50, 300):
        writer.emit("progress", step=i, total=300, loss=1.0)
        if i % 50 == 0:
            time.sleep(0.02)
    for t in threads:
        t.join(30)
    assert all(r == list(range(1, 302)) for r in results), [len(r) for r in results]


def test_resubscribing_from_n_gives_exactly_the_events_after_n(played):
    writer, _ = played
    for i in range(100):
        writer.emit("log", level="info", message=f"line {i}")
    first: list[int] = []
    collect(0, 40, first, threading.Event())
    assert first == list(range(1, 41))
    # "Reconnect" from the last seq seen, while more events keep coming.
    later: list[int] = []
    t = threading.Thread(target=collect, args=(first[-1], 151, later, threading.Event()))
    t.start()
    for i in range(50):
        writer.emit("log", level="info", message=f"more {i}")
    t.join(30)
    assert later == list(range(41, 152))


def test_a_job_that_ends_closes_every_stream_after_its_last_event(played):
    writer, sleeper = played
    got: list[dict] = []

    def follow():
        with Client(timeout=30) as client:
            got.extend(m for m in client.subscribe(JOB) if "ok" not in m)

    threads = [threading.Thread(target=follow) for _ in range(3)]
    for t in threads:
        t.start()
    writer.emit("progress", step=1, total=1, loss=0.5)
    writer.emit("status", phase="done")
    sleeper.kill()
    sleeper.wait()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    ends = [m for m in got if m.get("end")]
    assert len(ends) == 3 and all(m["job"]["state"] == "done" for m in ends)
    engine_seqs = [m["event"]["seq"] for m in got if m.get("stream") == "engine"]
    assert sorted(engine_seqs) == sorted([1, 2, 3] * 3)
    # The daemon's own stream carries the state change that ended it.
    states = [m["event"]["job_state"] for m in got if m.get("stream") == "daemon"]
    assert states.count("done") == 3


async def test_async_client_streams_and_other_requests_share_the_daemon(played):
    writer, _ = played
    client = await AsyncClient().connect()
    other = await AsyncClient().connect()
    seen = []
    try:
        stream = client.subscribe(JOB, since_seq=0)
        writer.emit("log", level="info", message="hello")
        async for message in stream:
            if message.get("stream") == "engine":
                seen.append(message["event"]["seq"])
                # A request on another connection is answered while this stream is open.
                assert (await other.request("ping"))["pong"]
                if message["event"]["seq"] == 2:
                    break
    finally:
        await client.close()
        await other.close()
    assert seen == [1, 2]


def test_a_subscriber_that_vanishes_mid_stream_does_not_hurt_the_others(played):
    writer, _ = played
    for i in range(2000):
        writer.emit("log", level="info", message="x" * 200)
    # Subscribe, read one line of a long history, and drop the connection.
    for _ in range(5):
        client = Client(timeout=10)
        client.send("subscribe", job=JOB, since_seq=0)
        client.file.readline()
        client.sock.close()
    assert request("ping")["pong"]
    seqs: list[int] = []
    collect(1990, 2001, seqs, threading.Event())
    assert seqs == list(range(1991, 2002))


def test_a_dead_adopted_engine_becomes_interrupted(played):
    writer, sleeper = played
    writer.emit("progress", step=3, total=10, loss=0.5)
    sleeper.kill()
    sleeper.wait()
    job = wait_state(JOB, "interrupted", timeout=10)
    assert "resume" in job["reason"]


def test_a_json_attach_outlives_daemon_restarts_with_every_event_once(played):
    # What a script sees: `tunerd attach --json JOB --since N` while tunerd is killed and restarted.
    import json
    import sys

    writer, sleeper = played
    for i in range(5):
        writer.emit("log", level="info", message=f"before {i}")
    watcher = subprocess.Popen([sys.executable, "-m", "tuner.daemon.cli", "attach", JOB, "--json", "--since", "2"],
                               stdout=subprocess.PIPE, text=True)
    assert json.loads(watcher.stdout.readline())["job"]["id"] == JOB  # the record comes first
    first = json.loads(watcher.stdout.readline())  # attached: the stream starts after seq 2
    assert first["event"]["seq"] == 3
    for restart in range(3):
        status = lifecycle.read_status()
        os.kill(status["pid"], signal.SIGKILL)
        for i in range(10):  # written while no daemon is up
            writer.emit("log", level="info", message=f"gap {restart}.{i}")
        lifecycle.start()
    writer.emit("status", phase="done")
    sleeper.kill()
    sleeper.wait()
    watcher.wait(timeout=60)  # the stream ends with the job (its ~40 lines fit in the pipe)
    messages = [first] + [json.loads(line) for line in watcher.stdout.read().splitlines()]
    engine = [m["event"]["seq"] for m in messages if m.get("stream") == "engine"]
    assert engine == list(range(3, 6 + 30 + 2))  # after seq 2: the rest, the gaps, the last status
    assert messages[-1].get("end") and watcher.returncode == 0


@pytest.fixture
def impatient(tunerd_env, monkeypatch):
    """The daemon of `played` gives up on a client that reads nothing for 1 s (30 s by default)."""
    monkeypatch.setenv("TUNERD_SLOW_CLIENT_SECONDS", "1")


def test_a_subscriber_that_stops_reading_is_cut_off_and_the_others_go_on(impatient, played):
    writer, _ = played
    stuck = Client(timeout=30)
    stuck.__enter__()
    stuck.send("subscribe", job=JOB, since_seq=0)  # and never reads a line of the stream
    got: list[int] = []
    ready = threading.Event()
    reader = threading.Thread(target=collect, args=(0, 201, got, ready))
    reader.start()
    for i in range(200):  # ~20 MB: far more than the socket buffers hold
        writer.emit("log", level="info", message=f"{i} " + "x" * 100_000)
    reader.join(60)
    assert got == list(range(1, 202))
    wait_for(lambda: "disconnecting it" in paths.daemon_log().read_text(), 20, what="the stuck client to be cut off")
    stuck.close()


def test_show_lists_the_jobs_checkpoints_with_their_state(played):
    import json
    import sys

    import torch
    from safetensors.torch import save_file

    from tuner.engine import checkpoints

    out = paths.jobs_dir() / JOB / "out"
    for step in (2, 4):
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"w": torch.ones(256)}, str(folder / "trainable.safetensors"))
        (folder / checkpoints.MARKER).write_text(json.dumps({"step": step, "files": checkpoints.manifest(folder)}))
    (out / "checkpoint-4" / "trainable.safetensors").write_bytes(b"cut")
    shown = subprocess.run([sys.executable, "-m", "tuner.daemon.cli", "show", JOB], capture_output=True, text=True)
    lines = [line for line in shown.stdout.splitlines() if "checkpoint:" in line]
    assert len(lines) == 2 and lines[0].endswith("(whole)")
    assert "checkpoint-4  (DAMAGED: trainable.safetensors is 3 bytes" in lines[1]
