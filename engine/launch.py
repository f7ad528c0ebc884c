"""How a job's engine is started: one process, several (one machine), or several machines.

Several processes go through accelerate's launcher, as `accelerate launch` users expect; without
CUDA the engine joins them on the CPU with gloo. Several machines each run the same launcher with
their machine rank and the main machine's address (torch.distributed's static rendezvous), which
is what `tuner slurm` writes into a batch script, one launcher per node. Torch-free.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Launch:
    """Where a run's processes are: `num_processes` in total over `num_machines` machines."""

    num_processes: int = 1
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None

    def problems(self) -> list[str]:
        """What is wrong with these settings, each with what to do."""
        found = []
        if self.num_processes < 1 or self.num_machines < 1:
            found.append("--num-processes and --num-machines must be at least 1")
        elif self.num_processes % self.num_machines:
            found.append(f"--num-processes {self.num_processes} (in total) does not divide over "
                         f"{self.num_machines} machines; give a multiple of {self.num_machines}")
        if not 0 <= self.machine_rank < max(self.num_machines, 1):
            found.append(f"--machine-rank {self.machine_rank} is outside 0..{self.num_machines - 1}")
        if self.num_machines > 1 and not self.main_process_ip:
            found.append("several machines need --main-process-ip: the address of machine rank 0")
        return found

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1 or self.num_machines > 1

    def argv(self, job_dir: str | Path, python: str = sys.executable) -> list[str]:
        """The command that runs the engine on `job_dir` on this machine."""
        if not self.distributed:
            return [python, "-m", "tuner.engine", str(job_dir)]
        argv = [python, "-m", "accelerate.commands.launch", "--multi_gpu",
                "--num_machines", str(self.num_machines), "--num_processes", str(self.num_processes),
                "--machine_rank", str(self.machine_rank),
                "--main_process_port", str(self.main_process_port or DEFAULT_PORT)]
        if self.main_process_ip:
            argv += ["--main_process_ip", self.main_process_ip]
        return [*argv, "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tuner.engine", str(job_dir)]


def slurm_script(job_dir: Path, *, nodes: int, gpus_per_node: int, name: str, python: str = sys.executable,
                 partition: str | None = None, time_limit: str | None = None, port: int = DEFAULT_PORT) -> str:
    """An sbatch script that starts one launcher per node, rank 0's node as the rendezvous host."""
    launch = Launch(num_processes=nodes * gpus_per_node, num_machines=nodes, main_process_ip="$MAIN_HOST",
                    main_process_port=port)
    argv = launch.argv(job_dir, python)
    rank = argv.index("--machine_rank") + 1
    argv[rank] = "$SLURM_NODEID"  # each node's own rank, known only inside srun
    # Quoted for the inner shell srun starts on each node, where $SLURM_NODEID and $MAIN_HOST expand.
    inner = " ".join(a if a.startswith("$") else shlex.quote(a) for a in argv)
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1          # one launcher per node; it starts the node's processes",
        f"#SBATCH --gpus-per-node={gpus_per_node}",
        f"#SBATCH --output={job_dir}/slurm-%j.log",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    lines += [
        "# Written by `tuner slurm`; submit it with `sbatch` (this file's path).",
        "set -euo pipefail",
        "export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-0} PYTHONUNBUFFERED=1",
        'MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "export MAIN_HOST",
        f"srun --kill-on-bad-exit=1 bash -c {shlex.quote('exec ' + inner)}",
        "",
    ]
    return "\n".join(lines)
