"""Launching on several processes and machines the way clusters do: `tuner train --num-processes`,
two machines' launchers meeting at a rendezvous (both on this host), and `tuner slurm`'s script."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine_fixtures import demo_config, events_of
from tuner.engine.launch import Launch

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def tuner(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuner.engine.cli", *args], env=ENV, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tuner_train_on_two_processes(tmp_path, tiny_sana) -> None:
    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, train_batch_size=2, checkpoint_step_interval=4)
    proc = tuner("train", str(config), "--plain", "--num-processes", "2", "--main-process-port", str(free_port()))
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out[-3000:]
    assert "step 4/4" in out  # the live lines come from rank 0's events
    output = tmp_path / "output"
    assert sorted(p.name for p in (output / "checkpoint-4").glob("rng-*.safetensors")) == [
        "rng-0.safetensors", "rng-1.safetensors"]
    assert events_of(output, "status")[-1]["phase"] == "done"


@pytest.mark.slow
def test_two_machines_meet_at_the_main_ones_address(tmp_path, tiny_sana) -> None:
    # Two launchers, as on two nodes: machine ranks 0 and 1, one process each, a local rendezvous.
    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, train_batch_size=2, checkpoint_step_interval=4)
    port = str(free_port())
    common = ["train", str(config), "--plain", "--num-processes", "2", "--num-machines", "2",
              "--main-process-ip", "127.0.0.1", "--main-process-port", port]
    logs = [tmp_path / f"machine-{rank}.log" for rank in (0, 1)]
    output = tmp_path / "output"

    def machine(rank: int) -> subprocess.Popen:
        # Files, not pipes: a machine blocked on a full pipe would hold the other at the rendezvous.
        return subprocess.Popen([sys.executable, "-m", "tuner.engine.cli", *common, "--machine-rank", str(rank)],
                                env=ENV, stdout=logs[rank].open("w"), stderr=subprocess.STDOUT)

    # As over a shared filesystem: machine 1 starts once machine 0 has written the job's files,
    # finds them there, and joins the same job rather than refusing its folder.
    machines = [machine(0)]
    deadline = time.monotonic() + 120
    while not (output / "config.json").exists() and machines[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    machines.append(machine(1))
    try:
        codes = [m.wait(timeout=400) for m in machines]
    finally:
        for m in machines:
            m.kill()
    outs = [log.read_text() for log in logs]
    assert codes == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    assert "machine rank 1: its processes run" in outs[1]
    assert events_of(output, "status")[-1]["phase"] == "done"
    assert len(list((output / "checkpoint-4").glob("rng-*.safetensors"))) == 2


def test_tuner_slurm_writes_a_script_that_starts_one_launcher_per_node(tmp_path, tiny_sana) -> None:
    config = demo_config(tmp_path, tiny_sana)
    proc = tuner("slurm", str(config), "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                 "--time", "24:00:00")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    script = tmp_path / "output" / "train.sbatch"
    assert f"submit it: sbatch {script}" in out
    text = script.read_text()
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=gpu", "#SBATCH --time=24:00:00"):
        assert line in text
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    for part in ("--num_machines 2", "--num_processes 8", "--machine_rank $SLURM_NODEID",
                 "--main_process_ip $MAIN_HOST", "--main_process_port 29500", f"-m tuner.engine {tmp_path / 'output'}"):
        assert part in srun, part
    # The job's files are where the script points: the run needs nothing else from this machine.
    assert json.loads((tmp_path / "output" / "config.json").read_text())["max_train_steps"] == 10


@pytest.mark.parametrize("launch,says", [
    (Launch(num_processes=3, num_machines=2, main_process_ip="h"), "does not divide over 2 machines"),
    (Launch(num_processes=2, num_machines=2), "need --main-process-ip"),
    (Launch(num_processes=2, num_machines=2, machine_rank=2, main_process_ip="h"), "outside 0..1"),
])
def test_launch_settings_that_cannot_work_are_refused_with_the_fix(launch, says) -> None:
    assert any(says in problem for problem in launch.problems())
