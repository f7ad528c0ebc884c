"""Shared helpers for the engine tests: one tiny Sana per test session, demo-style config folders."""
from __future__ import annotations

import json
from pathlib import Path

from tuner.presets.demo import write_demo_config
from tuner.engine.events import read_events
from tuner.engine.jobdir import EVENTS


def demo_config(tmp: Path, tiny_model: Path, **overrides) -> Path:
    """A small config folder: the tiny model, a generated dataset, validation off unless asked for."""
    defaults = dict(max_train_steps=10, checkpoint_step_interval=0, validation_step_interval=0,
                    validation_disable=True, use_ema=False, ema_validation="none", caption_dropout_probability=0.0,
                    lr_scheduler="constant", lr_warmup_steps=0)
    defaults.update(overrides)
    images = defaults.pop("images", 8)
    return write_demo_config(tmp, model_dir=tiny_model, images=images, **defaults)


def events_of(job_dir: Path, kind: str | None = None) -> list[dict]:
    return [e for e in read_events(job_dir / EVENTS) if kind is None or e["type"] == kind]


def edit_config(config_dir: Path, **changes) -> None:
    path = config_dir / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def copy_config_into(config_dir: Path, job_dir: Path) -> Path:
    """A job directory holding the config files exactly as they run."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "multidatabackend.json", "user_prompt_library.json"):
        if (config_dir / name).is_file():
            (job_dir / name).write_bytes((config_dir / name).read_bytes())
    return job_dir


def launch_two_processes(job_dir: Path, timeout: float = 400):
    """Run the engine on `job_dir` as two processes joined by gloo, as a 2-GPU job is launched.

    `accelerate launch --cpu` starts a single process (its multi-CPU path needs mpirun); the
    torchrun launcher starts two, and the engine joins them on the CPU when CUDA is absent.
    """
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free rendezvous port, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = Path(sys.executable).with_name("accelerate")
    return subprocess.run([str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "tuner.engine", str(job_dir)], env=env, capture_output=True, text=True, timeout=timeout)


def torchrun_script(script: Path, *args: str, processes: int = 2, timeout: float = 600):
    """Run a test's own script on `processes` processes joined by gloo (torchrun), one thread each."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free rendezvous port, so parallel runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                           "--master_port", str(port), str(script), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=timeout)


def train_config(config_dir: Path, job_dir: Path, **kw):
    """Run the real training loop on a config folder in this process; returns its TrainResult."""
    from tuner.engine.config import load_bundle
    from tuner.engine.events import EventWriter
    from tuner.engine.train.control import Control
    from tuner.engine.train.loop import train

    job_dir.mkdir(parents=True, exist_ok=True)
    return train(load_bundle(config_dir), events=EventWriter(job_dir / EVENTS), control=Control(job_dir),
                 preview_dir=job_dir / "previews", **kw)
