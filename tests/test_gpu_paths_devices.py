"""GPU numbering and per-GPU memory: a job's CUDA_VISIBLE_DEVICES means the cards the daemon claimed
(NVML's PCI-bus numbering, not CUDA's fastest-first), and the memory event lists each process's own GPU."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from tuner.daemon.runner import gpu_env
from tuner.engine.train.meters import Meters, device_counters


def test_a_job_sees_the_claimed_gpus_in_nvml_numbering():
    env = gpu_env({"CUDA_DEVICE_ORDER": "FASTEST_FIRST", "PATH": "/bin"}, ["1", "0"], cpu_only=False)
    assert env["CUDA_VISIBLE_DEVICES"] == "1,0" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["PATH"] == "/bin"


def test_a_cpu_job_sees_no_gpu_and_a_gpu_job_without_a_claim_keeps_the_machines_view():
    assert gpu_env({}, [], cpu_only=True)["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in gpu_env({}, [], cpu_only=False)


def test_the_engine_numbers_gpus_by_pci_bus_unless_the_user_chose_an_order():
    code = ("import os; from tuner.engine.config import TrainConfig; "
            "from tuner.engine.train.process_group import make_accelerator; "
            "make_accelerator(TrainConfig()); print(os.environ['CUDA_DEVICE_ORDER'])")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_DEVICE_ORDER"}
    unset = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert unset.stdout.strip() == "PCI_BUS_ID", unset.stderr[-2000:]
    chosen = subprocess.run([sys.executable, "-c", code], env={**env, "CUDA_DEVICE_ORDER": "FASTEST_FIRST"},
                            capture_output=True, text=True, timeout=120)
    assert chosen.stdout.strip() == "FASTEST_FIRST", chosen.stderr[-2000:]


def test_the_memory_event_lists_every_processs_own_gpu():
    gib = 1 << 30
    # As gathered by the loop: process 0 on an A100, process 1 on an L40S, each reading its own allocator.
    rows = [[10.0 * gib, 12.0 * gib, 11.0 * gib], [9.5 * gib, 10.0 * gib, 9.9 * gib]]
    event = Meters(10, 0, 1).memory(rows, ["NVIDIA A100-SXM4-80GB", "NVIDIA L40S"])
    assert [d["name"] for d in event["devices"]] == ["NVIDIA A100-SXM4-80GB", "NVIDIA L40S"]
    assert [d["allocated"] for d in event["devices"]] == [10 * gib, int(9.5 * gib)]
    assert all(d["peak"] > 0 for d in event["devices"]) and event["rss"] > 0


def test_without_cuda_the_counters_are_zero_and_the_event_lists_no_gpu():
    counters = device_counters(torch.device("cpu"))
    assert counters.tolist() == [0.0, 0.0, 0.0] and counters.dtype == torch.float64
    assert Meters(10, 0, 1).memory([counters.tolist()], [])["devices"] == []
