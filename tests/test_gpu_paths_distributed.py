"""The process group waits as long as process_group_timeout_minutes says: two real processes joined by
gloo (as the engine joins them without CUDA), one of them busy alone as the main process is while
it fills the caches or validates."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys, time
from tuner.engine.config import TrainConfig
from tuner.engine.train.process_group import make_accelerator

accelerator = make_accelerator(TrainConfig(process_group_timeout_minutes=float(sys.argv[1])))
if accelerator.is_main_process:
    time.sleep(float(sys.argv[2]))  # the main process caching alone
accelerator.wait_for_everyone()
print(f"rank {accelerator.process_index} passed the barrier", flush=True)
"""


def _two_processes(tmp_path: Path, timeout_minutes: float, busy_seconds: float) -> subprocess.CompletedProcess:
    script = tmp_path / "barrier.py"
    script.write_text(SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(script), str(timeout_minutes), str(busy_seconds)],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("timeout_minutes, passes", [(0.05, False), (1.0, True)], ids=["3s-fails", "60s-waits"])
def test_the_waiting_process_outlasts_the_main_ones_solo_work_only_within_the_timeout(tmp_path, timeout_minutes, passes):
    proc = _two_processes(tmp_path, timeout_minutes, busy_seconds=8)
    out = proc.stdout + proc.stderr
    assert (proc.returncode == 0) is passes, out[-3000:]
    assert ("rank 1 passed the barrier" in out) is passes, out[-3000:]
