"""Runs the queue: starts jobs on free GPUs, follows their engines, stops and resumes them."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import time

from tuner.daemon import paths, runner
from tuner.daemon import protocol as p
from tuner.daemon.feed import wait_event
from tuner.daemon.gpu import MemoryReader
from tuner.daemon.jobs import Job, JobStore, TransitionError
from tuner.daemon.queue import Scheduler
from tuner.daemon.watchdog import StallSettings, Watch
from tuner.engine import jobdir

log = logging.getLogger("tunerd.supervisor")

EXIT_POLL = 0.2       # seconds between checks that an engine is still alive
WATCH_INTERVAL = 1.0  # seconds between the watchdog's looks at a running engine's events
MEMORY_INTERVAL = 5.0


class Supervisor:
    """The one place that changes job states after submission."""

    def __init__(self, store: JobStore, scheduler: Scheduler):
        self.store = store
        self.scheduler = scheduler
        self.tasks: dict[str, asyncio.Task] = {}
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Look at the queue again soon (a job was queued or a GPU came free)."""
        self._kick.set()

    async def run(self) -> None:
        while True:
            self._kick.clear()
            for job, devices in self.scheduler.next_starts(list(self.store.jobs.values())):
                try:
                    self.start(job, devices)
                except Exception:  # one job's broken directory must not stop the whole queue
                    log.exception("job %s: could not be started", job.id)
                    if job.state in (p.QUEUED, p.STARTING):
                        self._fail(job, f"tunerd could not start it; see {paths.daemon_log()}")
            await wait_event(self._kick, 5.0)

    def start(self, job: Job, devices: list[str]) -> None:
        self.store.transition(job, p.STARTING, f"on {'GPUs ' + ','.join(devices) if devices else 'CPU'}",
                              devices=devices, runs=job.runs + 1, cancel_requested=False,
                              exit_code=None, pid=None, create_time=None, start_seq=job.latest()["seq"], stalled="")
        try:
            proc = runner.spawn(job)
        except OSError as e:
            self.store.transition(job, p.FAILED, f"cannot start the engine: {e}", devices=[])
            self.kick()
            return
        self.store.transition(job, p.RUNNING, f"engine pid {proc.pid}", pid=proc.pid,
                              create_time=runner.create_time(proc.pid))
        self.follow(job, proc)

    def _fail(self, job: Job, reason: str) -> None:
        try:
            if job.state == p.QUEUED:
                self.store.transition(job, p.STARTING, "starting")
            self.store.transition(job, p.FAILED, reason, devices=[])
        except (OSError, TransitionError):
            # Its directory is gone or unwritable: keep the record in memory only, and say so.
            log.exception("job %s: cannot record the failure; dropping it from the queue", job.id)
            job.state, job.reason = p.FAILED, reason

    def follow(self, job: Job, proc: subprocess.Popen | None = None) -> None:
        """Watch the engine until it exits; `proc` is None for an engine re-adopted after a restart."""
        task = asyncio.get_running_loop().create_task(self._follow(job, proc))
        self.tasks[job.id] = task
        task.add_done_callback(self._followed)

    def _followed(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("following an engine failed", exc_info=task.exception())

    async def _follow(self, job: Job, proc: subprocess.Popen | None) -> None:
        watch = Watch(StallSettings.of(job))
        watched_at = 0.0
        while True:
            if proc is not None:
                code = proc.poll()
                if code is not None:
                    break
            elif not runner.is_alive(job.pid, job.create_time):
                code = None  # not our child: its exit status is gone
                break
            if time.monotonic() - watched_at >= WATCH_INTERVAL:
                watched_at = time.monotonic()
                try:
                    await self._watch(job, watch)
                except OSError:  # an unwritable record must not stop following the engine
                    log.exception("job %s: the watchdog could not record its finding", job.id)
            await asyncio.sleep(EXIT_POLL)
        try:
            state, reason = runner.final_state(job, code)
            self.store.transition(job, state, reason, exit_code=code, devices=[])
        finally:
            self.tasks.pop(job.id, None)
            self.kick()  # its GPUs are free whatever happened to the record

    async def _watch(self, job: Job, watch: Watch) -> None:
        """Mark a running engine that sends no events as stalled (and stop it if the job says so)."""
        if job.stalled and watch.progressed(job):
            job.stalled = ""
            job.save()
            self.store.event(job, "log", level="info", stalled=False, message="the engine sends events again")
        reason = watch.check(job)
        if reason is None or job.state != p.RUNNING:
            return
        job.stalled = reason
        job.save()
        stop = watch.settings.action == "stop"
        then = ("stopping it (stall_action: stop)" if stop else
                f"`tunerd cancel {job.id}` ends it, then `tunerd resume {job.id}` continues from the latest checkpoint")
        log.warning("job %s: stalled: %s; %s", job.id, reason, then)
        self.store.event(job, "log", level="warning", stalled=True, message=f"stalled: {reason}; {then}")
        if stop:
            await self.cancel(job)

    async def cancel(self, job: Job) -> str:
        """End a job now: SIGTERM to its process group, SIGKILL after a grace period."""
        if job.state == p.QUEUED:
            self.store.transition(job, p.STOPPED, "cancelled before it started", cancel_requested=True)
            return "cancelled before it started"
        if job.state not in p.ACTIVE_STATES:
            raise p.ProtocolError("conflict", f"job {job.id} is {job.state}, not running; nothing to cancel")
        job.cancel_requested = True
        if job.state == p.RUNNING:
            self.store.transition(job, p.STOPPING, "cancel: SIGTERM to the engine")
        else:
            job.save()
        runner.kill_group(job, signal.SIGTERM)
        asyncio.get_running_loop().create_task(self._kill_later(job, job.pid))
        return f"sent SIGTERM to process group {job.pid}; SIGKILL follows in {runner.KILL_GRACE:.0f}s if needed"

    async def _kill_later(self, job: Job, pid: int | None) -> None:
        await asyncio.sleep(runner.KILL_GRACE)
        if job.pid == pid and job.state in p.ACTIVE_STATES and runner.kill_group(job, signal.SIGKILL):
            log.warning("job %s: the engine ignored SIGTERM for %.0fs; sent SIGKILL", job.id, runner.KILL_GRACE)

    def control(self, job: Job, name: str) -> str:
        """Hand a stop/save/sample request to a running engine."""
        if job.state not in (p.RUNNING, p.STOPPING):
            raise p.ProtocolError("conflict", f"job {job.id} is {job.state}; `{name}` needs a running job")
        jobdir.request(job.dir, name)
        if name == "stop" and job.state == p.RUNNING:
            self.store.transition(job, p.STOPPING, "stop requested: checkpoint, then exit")
        return f"asked the engine to {name}"

    def resume(self, job: Job) -> str:
        """Queue a new run of an ended job that continues from its latest checkpoint."""
        if job.state not in p.FINAL_STATES:
            raise p.ProtocolError("conflict", f"job {job.id} is {job.state}; only an ended job can be resumed")
        path = job.path / jobdir.CONFIG
        config = json.loads(path.read_text(encoding="utf-8"))
        # SimpleTuner configs may spell keys with a leading `--`; keep one spelling.
        config.pop("--resume_from_checkpoint", None)
        config["resume_from_checkpoint"] = "latest"
        jobdir.write_json_atomic(path, config)
        for name in jobdir.CONTROL_REQUESTS:
            jobdir.clear_request(job.dir, name)  # a stale stop would end the new run at once
        self.store.transition(job, p.QUEUED, "resume from the latest checkpoint")
        self.kick()
        return "queued; it continues from the latest checkpoint"

    def stop_all(self) -> list[str]:
        """Ask every running engine to checkpoint and exit (`tunerd stop --jobs`)."""
        stopped = []
        for job in list(self.store.jobs.values()):
            if job.state == p.QUEUED:
                self.store.transition(job, p.STOPPED, "tunerd stop --jobs")
            elif job.state in (p.RUNNING, p.STOPPING):
                self.control(job, "stop")
                stopped.append(job.id)
        return stopped

    async def sample_memory(self) -> None:
        """Append GPU-wide memory readings of running jobs' GPUs to their daemon stream."""
        reader = MemoryReader()
        if reader.nvml is None:
            return
        while True:
            await asyncio.sleep(MEMORY_INTERVAL)
            for job in list(self.store.jobs.values()):
                if job.state in p.ACTIVE_STATES and job.devices:
                    readings = reader.read(job.devices)
                    if readings:
                        self.store.event(job, "memory", source="nvml", devices=readings)
