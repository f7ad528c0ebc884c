"""Event latency through tunerd (engine writes a line → a subscribed client has it) and the
daemon's CPU use while it streams; prints figures.

    python bench/daemon_latency.py [--rate 100] [--seconds 5] [--subscribers 1,10]

The bench plays the engine: it makes a job whose record names a live `sleep` process (so the
daemon adopts it as running) and appends events to its events.jsonl at --rate per second, each
stamped with time.time_ns(). Subscribers run in separate processes so they do not share the
writer's GIL.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

JOB = "20260101-000000-bench"


def subscriber(since: int, total: int, ready, out) -> None:
    """Follow the job until `total` engine events arrived; report each one's latency in ms."""
    from tuner.daemon.client import Client

    latencies = []
    with Client(timeout=60) as client:
        for message in client.subscribe(JOB, since_seq=since):
            if message.get("ok"):
                ready.set()
                continue
            event = message.get("event", {})
            if message.get("stream") == "engine" and "t_ns" in event:
                latencies.append((time.time_ns() - event["t_ns"]) / 1e6)
                if len(latencies) >= total:
                    break
    out.put(latencies)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run(rate: float, seconds: float, subscribers: int, daemon: psutil.Process, job_dir: Path) -> dict:
    from tuner.engine.events import EventWriter

    writer = EventWriter(job_dir / "events.jsonl")
    total = int(rate * seconds)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    readies = [ctx.Event() for _ in range(subscribers)]
    # Each round measures only its own events: earlier rounds' are history, not latency.
    since = writer._seq
    procs = [ctx.Process(target=subscriber, args=(since, total, r, out)) for r in readies]
    for p in procs:
        p.start()
    for r in readies:
        r.wait(30)
    cpu0, wall0 = cpu_seconds(daemon), time.monotonic()
    for i in range(total):
        writer.emit("progress", step=i, total=total, loss=1.0, lr=1e-4, t_ns=time.time_ns())
        next_at = wall0 + (i + 1) / rate
        time.sleep(max(0.0, next_at - time.monotonic()))
    results = [out.get(timeout=60) for _ in procs]
    cpu1, wall1 = cpu_seconds(daemon), time.monotonic()
    for p in procs:
        p.join(10)
    latencies = sorted(x for r in results for x in r)
    return {
        "subscribers": subscribers, "rate": rate, "events": total,
        "median_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": latencies[-1],
        "daemon_cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="events per second (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each round (default %(default)s)")
    parser.add_argument("--subscribers", default="1,10", help="comma-separated subscriber counts per round")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tunerd-bench-"))
    os.environ["TUNER_DATA_DIR"] = str(tmp / "data")
    os.environ["TUNER_RUNTIME_DIR"] = str(tmp / "run")
    from tuner.daemon import lifecycle, paths
    from tuner.daemon.jobs import Job

    sleeper = subprocess.Popen(["sleep", "3600"], start_new_session=True)
    job_dir = paths.jobs_dir() / JOB
    job_dir.mkdir(parents=True)
    Job(id=JOB, dir=str(job_dir), state="running", pid=sleeper.pid,
        create_time=psutil.Process(sleeper.pid).create_time()).save()
    _, info = lifecycle.start()
    daemon = psutil.Process(info["pid"])
    try:
        cpu0 = cpu_seconds(daemon)
        time.sleep(3)
        idle = 100 * (cpu_seconds(daemon) - cpu0) / 3
        print(f"tunerd idle, one running job, no subscriber: {idle:.2f}% CPU")
        for n in (int(x) for x in args.subscribers.split(",")):
            r = run(args.rate, args.seconds, n, daemon, job_dir)
            if args.json:
                print(json.dumps(r))
            else:
                print(f"{n:>3} subscriber(s), {r['rate']:.0f} events/s × {args.seconds:.0f}s: latency median "
                      f"{r['median_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms; "
                      f"tunerd CPU {r['daemon_cpu_pct']:.1f}%")
    finally:
        sleeper.kill()
        sleeper.wait()
        lifecycle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
