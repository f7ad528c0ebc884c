"""The faults a long run meets, each forced for real, with one line of figures per fault.

    python bench/faults.py [--kills 10] [--steps 40] [--only engine-kill,daemon-kill,...]

- engine-kill: the engine is killed -9 at random moments (saves included) and resumed, again and
  again; the final weights must be bit-identical to an uninterrupted run's.
- daemon-kill: tunerd is killed -9 and restarted while `tunerd attach --json` watches a job that
  keeps writing events; the client must see every event exactly once.
- truncated: the newest checkpoint is cut short; resume must skip it, say so, and finish with the
  same weights as an uninterrupted run.
- full-disk: the output folder on a small tmpfs (needs root and mount; skipped otherwise); the run
  must stop with the disk message and leave every earlier checkpoint whole.
- stalled: the engine is frozen with SIGSTOP; tunerd must mark the job stalled within its limit.

Tiny Sana on the CPU, HF_HUB_OFFLINE; run it alone (two cores: another process skews timings).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def weights_digest(output: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted((output / "pipeline" / "transformer").glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def job_from(config: Path, job: Path) -> Path:
    job.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "multidatabackend.json", "user_prompt_library.json"):
        shutil.copy(config / name, job / name)
    return job


def engine(job: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner.engine", str(job)], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_config(root: Path, model: Path, steps: int, **overrides) -> Path:
    from tuner.presets.demo import write_demo_config

    return write_demo_config(root, model_dir=model, images=8, max_train_steps=steps, checkpoint_step_interval=4,
                             validation_disable=True, validation_step_interval=0, resume_from_checkpoint="latest",
                             **overrides)


def uninterrupted(work: Path, model: Path, steps: int) -> str:
    config = make_config(work / "whole", model, steps)
    assert engine(job_from(config, work / "whole" / "job")).wait() == 0, "the uninterrupted run failed"
    return weights_digest(work / "whole" / "output")


def fault_engine_kill(work: Path, model: Path, steps: int, kills: int, reference: str) -> str:
    config = make_config(work / "killed", model, steps)
    job = job_from(config, work / "killed" / "job")
    rng = random.Random(0)
    killed = 0
    started = time.monotonic()
    while killed < kills:
        proc = engine(job)
        time.sleep(rng.uniform(3.0, 9.0))  # start-up is ~3-5 s: some kills land before training
        if proc.poll() is not None:
            break  # it finished before the kill
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed += 1
    runs = killed + 1
    while engine(job).wait() != 0:
        runs += 1
    same = weights_digest(work / "killed" / "output") == reference
    return (f"engine-kill: {killed} kill -9s, {runs} runs, {time.monotonic() - started:.0f} s; final weights "
            f"{'bit-identical' if same else 'DIFFERENT'} to the uninterrupted run")


def fault_truncated(work: Path, model: Path, steps: int, reference: str) -> str:
    from tuner.engine import jobdir

    config = make_config(work / "truncated", model, steps)
    job = job_from(config, work / "truncated" / "job")
    proc = engine(job)
    # Stopped three quarters in (a checkpoint at that step), then its newest checkpoint is cut short.
    while proc.poll() is None:
        steps_seen = [json.loads(line).get("step", 0) for line in (job / "events.jsonl").read_text().splitlines()
                      if '"progress"' in line] if (job / "events.jsonl").exists() else []
        if steps_seen and steps_seen[-1] >= steps * 3 // 4:
            jobdir.request(job, "stop")
            break
        time.sleep(0.2)
    proc.wait()
    output = work / "truncated" / "output"
    newest = max(output.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    victim = newest / "trainable.safetensors"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    code = engine(job).wait()
    said = [json.loads(line)["message"] for line in (job / "events.jsonl").read_text().splitlines()
            if "skipped checkpoint" in line]
    same = weights_digest(output) == reference
    return (f"truncated: stopped at {newest.name}, then cut it to a third; the resumed run exited {code}, "
            f"{'skipped it with a message' if said else 'NOT SAID'}; final weights "
            f"{'bit-identical' if same else 'DIFFERENT'} to the uninterrupted run")


def fault_full_disk(work: Path, model: Path) -> str:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return "full-disk: skipped (needs root and mount for a small tmpfs)"
    probe = make_config(work / "probe", model, 4)
    assert engine(job_from(probe, work / "probe" / "job")).wait() == 0
    size = sum(p.stat().st_size for p in (work / "probe" / "output" / "checkpoint-4").iterdir())
    disk = work / "small-disk"
    disk.mkdir()
    limit = int(size * 2.5) + (1 << 20)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        return f"full-disk: skipped (mount tmpfs failed: {mounted.stderr.strip()[:80]})"
    try:
        config = make_config(work / "full", model, 40, output_dir=str(disk / "output"),
                             checkpoints_total_limit=None)
        job = job_from(config, work / "full" / "job")
        code = engine(job).wait()
        events = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()]
        errors = [e["message"] for e in events if e["type"] == "error"]
        from tuner.engine import checkpoints

        states = checkpoints.states(disk / "output")
        whole = sum(s.ok for s in states)
        said = bool(errors) and "not enough disk space" in errors[-1]
        return (f"full-disk: tmpfs of {limit / (1 << 20):.1f} MiB, checkpoints of {size / (1 << 20):.1f} MiB; exit "
                f"{code}; {'disk message' if said else 'NO DISK MESSAGE: ' + (errors[-1][:80] if errors else '')}; "
                f"{whole}/{len(states)} checkpoints whole")
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def fault_daemon_kill(work: Path, kills: int) -> str:
    """The test plays the engine (a `sleep` the daemon adopts, and events written from here)."""
    import psutil

    os.environ.update(TUNER_DATA_DIR=str(work / "tunerd-data"), TUNER_RUNTIME_DIR=str(work / "tunerd-run"))
    from tuner.daemon import lifecycle, paths
    from tuner.daemon import protocol as p
    from tuner.daemon.jobs import Job
    from tuner.engine.events import EventWriter

    job_id = "20261202-000000-faults"
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    folder = paths.jobs_dir() / job_id
    folder.mkdir(parents=True)
    Job(id=job_id, dir=str(folder), state=p.RUNNING, pid=sleeper.pid,
        create_time=psutil.Process(sleeper.pid).create_time(), output_dir=str(folder / "out")).save()
    writer = EventWriter(folder / "events.jsonl")
    writer.emit("status", phase="training")
    lifecycle.start()
    watcher = subprocess.Popen([sys.executable, "-m", "tuner.daemon.cli", "attach", job_id, "--json"],
                               stdout=subprocess.PIPE, text=True, env={**os.environ})
    rng = random.Random(1)
    written = 1
    try:
        for _ in range(kills):
            for _ in range(rng.randint(20, 200)):  # ~100 events/s
                writer.emit("progress", step=written, total=10_000, loss=1.0)
                written += 1
                time.sleep(0.01)
            os.kill(lifecycle.read_status()["pid"], signal.SIGKILL)
            for _ in range(rng.randint(0, 50)):
                writer.emit("progress", step=written, total=10_000, loss=1.0)
                written += 1
            lifecycle.start()
        writer.emit("status", phase="done")
        written += 1
        sleeper.kill()
        sleeper.wait()
        out, _ = watcher.communicate(timeout=120)
    finally:
        lifecycle.stop(timeout=10)
    seqs = [json.loads(line)["event"]["seq"] for line in out.splitlines() if '"stream": "engine"' in line]
    lost = len(set(range(1, written + 1)) - set(seqs))
    repeated = len(seqs) - len(set(seqs))
    return (f"daemon-kill: {kills} kill -9s of tunerd while {written} events were written; the --json client "
            f"saw {len(set(seqs))}: {lost} lost, {repeated} repeated, {'in order' if seqs == sorted(seqs) else 'OUT OF ORDER'}")


def fault_stalled(work: Path, model: Path) -> str:
    os.environ.update(TUNER_DATA_DIR=str(work / "stall-data"), TUNER_RUNTIME_DIR=str(work / "stall-run"))
    from tuner.daemon import lifecycle
    from tuner.daemon.client import Client

    config = make_config(work / "stall", model, 2000, stall_timeout_minutes=0.1)  # 6 s while training
    lifecycle.start()
    try:
        with Client(timeout=60) as client:
            job = client.request("submit", path=str(config), cwd=str(work), gpus=0)["job"]["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with Client(timeout=60) as client:
                shown = client.request("show", job=job)
            if (shown.get("progress") or {}).get("step"):
                break
            time.sleep(0.5)
        pid = shown["job"]["pid"]
        os.killpg(pid, signal.SIGSTOP)
        frozen = time.monotonic()
        while time.monotonic() - frozen < 60:
            with Client(timeout=60) as client:
                record = client.request("show", job=job)["job"]
            if record.get("stalled"):
                break
            time.sleep(0.2)
        marked = time.monotonic() - frozen
        os.killpg(pid, signal.SIGCONT)
        os.killpg(pid, signal.SIGKILL)
        return (f"stalled: engine frozen with SIGSTOP; marked stalled after {marked:.1f} s (limit 6 s while "
                f"training){'' if record.get('stalled') else ' — NOT MARKED'}")
    finally:
        lifecycle.stop(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--only", default="engine-kill,daemon-kill,truncated,full-disk,stalled")
    args = parser.parse_args()
    only = set(args.only.split(","))
    from tuner.engine.tiny import build_tiny_sana

    with tempfile.TemporaryDirectory(prefix="tuner-faults-") as tmp:
        work = Path(tmp)
        model = build_tiny_sana(work / "model")
        reference = uninterrupted(work, model, args.steps) if only & {"engine-kill", "truncated"} else ""
        lines = []
        if "engine-kill" in only:
            lines.append(fault_engine_kill(work, model, args.steps, args.kills, reference))
        if "truncated" in only:
            lines.append(fault_truncated(work, model, args.steps, reference))
        if "full-disk" in only:
            lines.append(fault_full_disk(work, model))
        if "daemon-kill" in only:
            lines.append(fault_daemon_kill(work, args.kills))
        if "stalled" in only:
            lines.append(fault_stalled(work, model))
        for line in lines:
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
