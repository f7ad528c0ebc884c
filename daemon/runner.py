"""Starting an engine process for a job, watching it, ending it, and naming how it ended."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tuner.daemon import protocol as p
from tuner.daemon.jobs import Job
from tuner.engine import jobdir
from tuner.engine.launch import Launch

log = logging.getLogger("tunerd.runner")

# Seconds a cancelled engine gets between SIGTERM and SIGKILL.
KILL_GRACE = 10.0


def engine_prefix() -> list[str]:
    """The command that runs a job dir; TUNER_ENGINE_CMD (a JSON list) replaces it, for tests."""
    override = os.environ.get("TUNER_ENGINE_CMD")
    if override:
        return list(json.loads(override))
    # The same interpreter as the daemon: the engine must see the same installed packages.
    return [sys.executable, "-m", "tuner.engine"]


def engine_argv(job: Job) -> list[str]:
    """The engine command for `job`: one process, or `accelerate launch` across its GPUs (or its
    CPU processes)."""
    processes = len(job.devices) if job.devices else job.processes
    if processes > 1 and not os.environ.get("TUNER_ENGINE_CMD"):
        # Two multi-process jobs side by side would both take accelerate's default port 29500.
        return Launch(num_processes=processes, main_process_port=free_port()).argv(job.dir)
    return [*engine_prefix(), job.dir]


def free_port() -> int:
    """A TCP port nobody listens on now, for torch.distributed's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_env(env: dict[str, str], devices: list[str], *, cpu_only: bool) -> dict[str, str]:
    """`env` for a job given `devices` (NVML indices or UUIDs, as the daemon claims them).

    CUDA numbers GPUs fastest first unless told otherwise, NVML (and nvidia-smi) by PCI bus: on a
    machine with mixed GPUs, index 1 would be another card to CUDA than the one claimed and read.
    PCI_BUS_ID makes CUDA_VISIBLE_DEVICES mean the NVML indices it is given."""
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    elif cpu_only:
        # A CPU job must not wander onto a GPU that another job has claimed.
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    return env


def spawn(job: Job) -> subprocess.Popen:
    """Start the engine in its own session (it must outlive the daemon), output to engine.log."""
    env = gpu_env(dict(os.environ, PYTHONUNBUFFERED="1"), job.devices, cpu_only=job.gpus == 0)
    env.pop("TUNER_ENGINE_CMD", None)
    argv = engine_argv(job)
    with open(job.path / jobdir.ENGINE_LOG, "ab") as out:
        out.write(f"=== tunerd: run {job.runs} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{' '.join(argv)}\n".encode())
        out.flush()
        # A file, not a pipe: nothing ties the engine's output to the daemon being alive.
        proc = subprocess.Popen(argv, cwd=job.dir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return proc


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(pid: int | None, started: float | None) -> bool:
    """True when `pid` is running and is the process we started (same create time)."""
    if not pid or started is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - started) < 0.01
    except psutil.Error:
        return False


def kill_group(job: Job, sig: int) -> bool:
    """Send `sig` to the engine's process group (accelerate workers included), if it is ours."""
    if not is_alive(job.pid, job.create_time):
        return False
    try:
        # start_new_session made the engine a group leader: its pgid is its pid.
        os.killpg(job.pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as e:
        log.error("job %s: cannot signal process group %s: %s", job.id, job.pid, e)
        return False


def signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def final_state(job: Job, returncode: int | None, watched: bool = True) -> tuple[str, str]:
    """The state a job ends in, from the engine's last status event and its exit code.

    `returncode` is None when the engine was not our child (re-adopted, or found dead on start)
    and its exit status is lost; `watched` says whether tunerd was running when it ended.
    """
    phase = job.last_phase()
    if phase == "done":
        return p.DONE, "finished"
    if job.cancel_requested and job.stalled:
        return p.STOPPED, (f"stopped by the watchdog: {job.stalled}; `tunerd resume {job.id}` continues from the "
                           "latest checkpoint")
    if job.cancel_requested:
        return p.STOPPED, "cancelled"
    if phase == "stopped":
        return p.STOPPED, "stopped on request; resume continues from its checkpoint"
    if phase == "failed":
        return p.FAILED, f"the engine reported a failure; see {Path(job.dir) / jobdir.ENGINE_LOG}"
    if returncode is None:
        how = ("ended without reporting why (it was re-adopted after a tunerd restart, so its exit "
               "status is unknown)" if watched else "ended while tunerd was not running")
        return p.INTERRUPTED, (f"the engine (pid {job.pid}) {how}; last phase: {phase or 'none'}; "
                               f"`tunerd resume {job.id}` continues from the latest checkpoint")
    if returncode < 0:
        return p.INTERRUPTED, (f"the engine was killed by {signal_name(returncode)} "
                               f"(last phase: {phase or 'none'}); `tunerd resume {job.id}` continues "
                               "from the latest checkpoint")
    where = Path(job.dir) / jobdir.ENGINE_LOG
    if returncode != 0:
        return p.FAILED, f"the engine exited with status {returncode}; see {where}"
    return p.FAILED, f"the engine exited without reporting `done` (last phase: {phase or 'none'}); see {where}"
