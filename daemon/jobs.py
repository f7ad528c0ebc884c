"""Job records (job.json) and their checked state machine; every change is also an event.

The engine is the only writer of events.jsonl, so the daemon never appends to it: state changes
go to job.json (the current record, with its history) and, as `status` events carrying
`job_state`, to the job's own daemon-events.jsonl, which clients receive as the "daemon" stream.
"""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tuner.daemon import protocol as p
from tuner.engine import jobdir
from tuner.engine.events import EventTail, EventWriter

log = logging.getLogger("tunerd.jobs")

DAEMON_EVENTS = "daemon-events.jsonl"


class TransitionError(Exception):
    """A state change the state machine does not allow."""


@dataclass
class Job:
    """One job: the record in job.json plus its directory."""

    id: str
    dir: str
    name: str = ""
    state: str = p.QUEUED
    reason: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    source: str = ""            # the config the user submitted
    output_dir: str = ""
    gpus: int = 1               # GPUs wanted (0 = CPU)
    processes: int = 1          # engine processes: one per GPU, or CPU processes of a CPU job
    devices: list[str] = field(default_factory=list)   # GPUs claimed for the current run
    pid: int | None = None
    create_time: float | None = None   # psutil create time: pid reuse cannot fool reconcile
    exit_code: int | None = None
    runs: int = 0
    start_seq: int = 0          # the engine's last seq before the current run began
    cancel_requested: bool = False
    stalled: str = ""           # why the watchdog thinks the engine hangs ("": it makes progress)
    history: list[dict[str, Any]] = field(default_factory=list)
    # Not saved: where the incremental read of events.jsonl has got to.
    _scan: EventTail | None = field(default=None, repr=False, compare=False)
    _latest: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def path(self) -> Path:
        return Path(self.dir)

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def save(self) -> None:
        jobdir.write_json_atomic(self.path / jobdir.JOB_RECORD, self.record())

    @classmethod
    def load(cls, folder: Path) -> Job:
        data = json.loads((folder / jobdir.JOB_RECORD).read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        job = cls(**{k: v for k, v in data.items() if k in known})
        job.dir = str(folder)  # the folder may have moved with the data dir
        if job.state not in p.STATES:
            raise ValueError(f"{folder / jobdir.JOB_RECORD}: state: unknown state {job.state!r}")
        return job

    def last_phase(self) -> str | None:
        """The phase of the current run's last status event (an earlier run's does not count)."""
        latest = self.latest()
        return latest["phase"] if latest["phase_seq"] > self.start_seq else None

    def latest(self) -> dict[str, Any]:
        """The engine's last phase, progress, checkpoint and seq, from events.jsonl read incrementally."""
        if self._scan is None:
            self._scan = EventTail(self.path / jobdir.EVENTS)
            self._latest = {"phase": None, "phase_seq": 0, "progress": None, "checkpoint": None, "seq": 0}
        for event in self._scan.read_new():
            kind = event.get("type")
            if kind == "status" and event.get("phase"):
                self._latest["phase"] = event["phase"]
                self._latest["phase_seq"] = event.get("seq", 0)
            elif kind in ("progress", "checkpoint"):
                self._latest[kind] = event
            if isinstance(event.get("seq"), int):
                self._latest["seq"] = max(self._latest["seq"], event["seq"])
        return dict(self._latest)

    def summary(self) -> dict[str, Any]:
        """The record plus where the run stands, without the history."""
        out = {k: v for k, v in self.record().items() if k != "history"}
        latest = self.latest()
        progress = latest["progress"] or {}
        out.update(phase=latest["phase"], last_seq=latest["seq"], step=progress.get("step"),
                   total=progress.get("total"), loss=progress.get("loss"))
        return out


class JobStore:
    """Every job under the jobs dir, and the one writer of their daemon-events.jsonl files."""

    def __init__(self, root: Path):
        self.root = root
        self.jobs: dict[str, Job] = {}
        self._writers: dict[str, EventWriter] = {}
        self.listeners: list = []   # fn(job) called after every transition

    def load_all(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.root.iterdir()):
            if not (folder / jobdir.JOB_RECORD).exists():
                continue
            try:
                job = Job.load(folder)
            except (OSError, ValueError, TypeError) as e:
                # One damaged record must not keep the daemon (and every other job) down.
                log.error("skipping job %s: cannot read its job.json: %s", folder.name, e)
                continue
            self.jobs[job.id] = job

    def reserve(self, name: str) -> tuple[str, Path]:
        """A new sortable id (date-time plus a slug of the name) and its staging folder, created."""
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "job"
        base = time.strftime("%Y%m%d-%H%M%S") + "-" + slug
        n = 1
        while True:
            job_id = base if n == 1 else f"{base}-{n}"
            staging = self.root / f".staging-{job_id}"
            if job_id not in self.jobs and not (self.root / job_id).exists():
                try:
                    staging.mkdir(parents=True)  # atomic: two submits cannot take one id
                    return job_id, staging
                except FileExistsError:
                    pass
            n += 1

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        job.history.append({"state": job.state, "time": round(time.time(), 3), "reason": job.reason})
        job.save()
        self.event(job, "status", job_state=job.state, previous=None, reason=job.reason or "submitted")
        for fn in self.listeners:
            fn(job)

    def get(self, job_id: str) -> Job:
        """A job by id, a unique prefix of its id, or its name when no other job has it."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        matches = [j for k, j in self.jobs.items() if k.startswith(job_id)] if job_id else []
        if not matches:
            matches = [j for j in self.jobs.values() if j.name == job_id]
        if len(matches) == 1:
            return matches[0]
        hint = f"; it matches {len(matches)} jobs" if matches else "; `tunerd list` shows the jobs"
        raise p.ProtocolError("not_found", f"no job {job_id!r}{hint}")

    def remove(self, job: Job) -> None:
        self.jobs.pop(job.id, None)
        self._writers.pop(job.id, None)

    def transition(self, job: Job, new: str, reason: str = "", **changes: Any) -> None:
        """Move `job` to `new` if the state machine allows it; record and announce the change."""
        old = job.state
        if new not in p.TRANSITIONS.get(old, ()):
            raise TransitionError(f"job {job.id}: cannot go from {old} to {new}")
        for key, value in changes.items():
            setattr(job, key, value)
        job.state, job.reason, job.updated = new, reason, time.time()
        job.history.append({"state": new, "time": round(job.updated, 3), "reason": reason})
        job.save()
        self.event(job, "status", job_state=new, previous=old, reason=reason)
        log.info("job %s: %s -> %s%s", job.id, old, new, f" ({reason})" if reason else "")
        for fn in self.listeners:
            fn(job)

    def event(self, job: Job, type: str, **fields: Any) -> dict[str, Any]:
        """Append one event to the job's daemon-events.jsonl."""
        writer = self._writers.get(job.id)
        if writer is None:
            writer = self._writers[job.id] = EventWriter(job.path / DAEMON_EVENTS)
        return writer.emit(type, **fields)
