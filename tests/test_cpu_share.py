"""A CPU run shares the machine: beside busy programs the engine trains on the cores they leave free
and says so; a user's torch_num_threads fixes the count. (Speed figures: `make bench`.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from engine_fixtures import copy_config_into, demo_config, events_of
from tuner.engine.train import cpu_share

STAT = """cpu  900 0 300 5000 100 0 0 0 0 0
cpu0 400 0 100 2500 50 0 0 0 0 0
cpu1 500 0 200 2500 50 0 0 0 0 0
intr 12345
"""


def test_busy_time_is_read_per_allowed_cpu_without_idle_or_iowait() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    assert cpu_share.busy_seconds(["cpu0"], STAT) == pytest.approx(500 / ticks)
    assert cpu_share.busy_seconds(["cpu0", "cpu1"], STAT) == pytest.approx(1200 / ticks)


def test_the_thread_count_is_the_free_cores_within_one_and_torchs_default() -> None:
    assert cpu_share.threads_for(2, 0.1, most=2) == 2
    assert cpu_share.threads_for(2, 0.7, most=2) == 1  # one busy process beside two spinning threads
    assert cpu_share.threads_for(2, 3.0, most=2) == 1
    assert cpu_share.threads_for(16, 4.2, most=8) == 8
    assert cpu_share.threads_for(16, 12.0, most=8) == 4


def test_a_change_needs_the_same_answer_twice_and_is_announced() -> None:
    before = torch.get_num_threads()
    said: list[str] = []
    share = cpu_share.CpuShare(["cpu0", "cpu1"], 2, said.append)
    try:
        share.decide(1.0)
        assert share.threads == 2 and not said  # one busy look could be a burst
        share.decide(1.0)
        assert share.threads == 1 and torch.get_num_threads() == 1
        assert "training on 1 thread (was 2)" in said[0] and "torch_num_threads" in said[0]
        share.decide(1.0)
        share.decide(0.0)
        share.decide(1.0)  # the pending change back was not confirmed
        assert share.threads == 1 and len(said) == 1
        share.decide(0.0)
        share.decide(0.0)
        assert share.threads == 2 and "training on 2 threads (was 1)" in said[1]
    finally:
        torch.set_num_threads(before)


def _run_engine(job_dir, env_threads: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNER_CPU_THREADS": env_threads}
    env.pop("OMP_NUM_THREADS", None)
    return subprocess.run([sys.executable, "-m", "tuner.engine", str(job_dir)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not os.path.exists("/proc/stat") or (os.cpu_count() or 1) < 2, reason="reads Linux's /proc/stat")
def test_beside_busy_programs_a_cpu_run_trains_on_fewer_threads_and_says_so(tmp_path, tiny_sana) -> None:
    config = demo_config(tmp_path / "cfg", tiny_sana, max_train_steps=150, images=8)
    job = copy_config_into(config, tmp_path / "job")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count())]
    try:
        proc = _run_engine(job, "auto")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    messages = [e["message"] for e in events_of(job, "log") if "training on" in e.get("message", "")]
    assert messages, "no thread change was announced"
    assert "other programs use about" in messages[0] and f"of this machine's {len(os.sched_getaffinity(0))} CPUs" \
        in messages[0]


def test_torch_num_threads_fixes_the_count(tmp_path, tiny_sana) -> None:
    config = demo_config(tmp_path / "cfg", tiny_sana, max_train_steps=3, torch_num_threads=1)
    job = copy_config_into(config, tmp_path / "job")
    probe = tmp_path / "probe.py"
    # The engine's own entry, with the thread count read back after training.
    probe.write_text("import sys, torch\nfrom tuner.engine.runner import run_job_dir\n"
                     "code = run_job_dir(sys.argv[1])\nprint('THREADS', torch.get_num_threads())\nsys.exit(code)\n")
    env = {**os.environ, "TUNER_CPU_THREADS": "auto"}
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, str(probe), str(job)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "THREADS 1" in proc.stdout
    assert not [e for e in events_of(job, "log") if "training on" in e.get("message", "")]
