"""The layout of a job directory and the control requests a running engine obeys.

Torch-free: the daemon writes requests, the engine reads them between steps.
A job directory holds exactly what runs (config.json, multidatabackend.json,
user_prompt_library.json), the daemon's job.json, the engine's events.jsonl and engine.log,
preview frames, and control/ for requests.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CONFIG = "config.json"
DATABACKEND = "multidatabackend.json"
PROMPT_LIBRARY = "user_prompt_library.json"
JOB_RECORD = "job.json"
EVENTS = "events.jsonl"
ENGINE_LOG = "engine.log"
PREVIEWS = "previews"
CONTROL = "control"

# Requests a running engine obeys, checked between optimizer steps:
#   stop    write a checkpoint, then exit with status "stopped"
#   save    write a checkpoint now and go on
#   sample  run validation now and go on
CONTROL_REQUESTS = ("stop", "save", "sample")


def request(job_dir: str | os.PathLike[str], name: str) -> Path:
    """Ask the engine running in `job_dir` to stop, save or sample."""
    if name not in CONTROL_REQUESTS:
        raise ValueError(f"unknown control request {name!r}; expected one of {CONTROL_REQUESTS}")
    folder = Path(job_dir) / CONTROL
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.touch()
    return path


def pending_requests(job_dir: str | os.PathLike[str]) -> list[str]:
    """The control requests waiting in `job_dir`, in a fixed order."""
    folder = Path(job_dir) / CONTROL
    return [name for name in CONTROL_REQUESTS if (folder / name).exists()]


def clear_request(job_dir: str | os.PathLike[str], name: str) -> None:
    (Path(job_dir) / CONTROL / name).unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON so that a reader or a crash never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
