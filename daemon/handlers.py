"""One handler per verb: each takes the daemon, the connection and the request, returns the reply."""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.daemon import protocol as p
from tuner.daemon import submit as sub
from tuner.engine import checkpoints, jobdir

if TYPE_CHECKING:
    from tuner.daemon.server import Connection, Daemon

LOG_CHUNK = 256 * 1024  # log text per reply; JSON escaping must keep a reply under MAX_LINE


async def hello(d: Daemon, conn: Connection, msg: dict) -> dict:
    version = p.arg(msg, "version", int)
    if version != p.PROTOCOL_VERSION:
        conn.closing = True
        raise p.ProtocolError("version", (
            f"protocol version mismatch: this client speaks {version}, tunerd (pid {os.getpid()}) speaks "
            f"{p.PROTOCOL_VERSION}; restart the daemon with `tunerd stop && tunerd start` so both come "
            "from the same install"))
    conn.greeted = True
    return {"version": p.PROTOCOL_VERSION, "daemon_version": p.DAEMON_VERSION, "pid": os.getpid()}


async def ping(d: Daemon, conn: Connection, msg: dict) -> dict:
    return {"pong": True, "time": time.time()}


async def status(d: Daemon, conn: Connection, msg: dict) -> dict:
    counts: dict[str, int] = {}
    for job in d.store.jobs.values():
        counts[job.state] = counts.get(job.state, 0) + 1
    return {"pid": os.getpid(), "version": p.DAEMON_VERSION, "protocol": p.PROTOCOL_VERSION,
            "socket": str(d.socket), "data_dir": str(d.data_dir), "started": d.started,
            "gpus": d.scheduler.gpus, "jobs": counts}


async def shutdown(d: Daemon, conn: Connection, msg: dict) -> dict:
    stopped = d.supervisor.stop_all() if p.arg(msg, "jobs", bool, False) else []
    # Reply first; the daemon stops once the reply is on its way.
    asyncio.get_running_loop().call_later(0.05, d.stop_event.set)
    return {"stopping": True, "stopped_jobs": stopped}


async def submit(d: Daemon, conn: Connection, msg: dict) -> dict:
    cwd = Path(p.arg(msg, "cwd", str))
    if not cwd.is_absolute():
        raise p.ProtocolError("bad_request", "`cwd` must be an absolute path")
    processes = p.arg(msg, "processes", int, None)
    if processes is not None and processes < 1:
        raise p.ProtocolError("bad_request", "`processes` must be at least 1")
    # On GPUs a process is a GPU; without them, processes are CPU processes (gloo) of one CPU job.
    gpus = p.arg(msg, "gpus", int, (processes or 1) if d.scheduler.gpus else 0)
    problem = d.scheduler.check(gpus)
    if problem:
        raise p.ProtocolError("invalid", problem + "; submit it with fewer GPUs (--gpus)")
    preset = p.arg(msg, "preset", str, None)
    if preset is not None:
        dataset, output = p.arg(msg, "dataset", str), p.arg(msg, "output", str)
        bundle = await asyncio.to_thread(sub.quick_bundle, preset, dataset, output, cwd)
        source = f"preset {preset} on {dataset}"
        if not msg.get("name"):
            msg["name"] = f"{preset}-{Path(dataset).name}"
    else:
        path = Path(p.arg(msg, "path", str)).expanduser()
        source = str(path if path.is_absolute() else cwd / path)
        bundle = await asyncio.to_thread(sub.read_bundle, Path(source), cwd)
    # Checked before a job id is reserved: a refused config leaves nothing behind.
    name = sub.unique_name(sub.job_name(bundle, p.arg(msg, "name", str, None)),
                           {j.name for j in d.store.jobs.values()})
    job_id, staging = d.store.reserve(name)
    job = await asyncio.to_thread(sub.stage, job_id, staging, bundle, source, name, gpus)
    job.processes = gpus or processes or 1
    d.store.add(job)
    d.supervisor.kick()
    return {"job": job.record(), "warnings": [str(w) for w in bundle.warnings]}


async def list_jobs(d: Daemon, conn: Connection, msg: dict) -> dict:
    jobs = sorted(d.store.jobs.values(), key=lambda j: j.id)
    return {"jobs": [j.summary() for j in jobs]}


async def show(d: Daemon, conn: Connection, msg: dict) -> dict:
    job = d.store.get(p.arg(msg, "job", str))
    files = {name: str(job.path / name) for name in (jobdir.CONFIG, jobdir.EVENTS, jobdir.ENGINE_LOG)}
    latest = job.latest()
    # Sizes only (hashes are checked when a run resumes): quick even for many large checkpoints.
    found = await asyncio.to_thread(checkpoints.states, Path(job.output_dir), False) if job.output_dir else []
    return {"job": {**job.record(), **job.summary()}, "files": files,
            "progress": latest["progress"], "checkpoint": latest["checkpoint"],
            "checkpoints": [{"step": c.step, "path": str(c.path), "problem": c.problem} for c in found]}


async def logs(d: Daemon, conn: Connection, msg: dict) -> dict:
    """A piece of engine.log: from `offset`, or the last `lines` lines when no offset is given."""
    job = d.store.get(p.arg(msg, "job", str))
    offset = p.arg(msg, "offset", int, None)
    lines = p.arg(msg, "lines", int, 100)
    path = job.path / jobdir.ENGINE_LOG
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if offset is None:
        # Whole lines from the end: read back far enough for `lines` of them, within the cap.
        start = max(0, size - LOG_CHUNK)
        data = _read(path, start, size - start)
        parts = data.split(b"\n")
        keep = parts[-(lines + 1):] if lines > 0 else [b""]
        data = b"\n".join(keep)
        offset = size
    else:
        offset = min(max(offset, 0), size)
        data = _read(path, offset, LOG_CHUNK)
        offset += len(data)
    return {"text": data.decode("utf-8", errors="replace"), "offset": offset, "size": size,
            "state": job.state, "ended": job.state in p.FINAL_STATES and offset >= size}


def _read(path: Path, start: int, count: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read(count)
    except FileNotFoundError:
        return b""


async def subscribe(d: Daemon, conn: Connection, msg: dict) -> dict:
    job = d.store.get(p.arg(msg, "job", str))
    since = {"engine": p.arg(msg, "since_seq", int, 0), "daemon": p.arg(msg, "since_daemon_seq", int, 0)}
    rid = msg.get("id")

    async def send(batch: list[dict[str, Any]]) -> None:
        await conn.send_many([{"id": rid, **m} for m in batch])

    conn.start_stream(d.hub.stream(job, since, send))
    return {"job": job.record(), "streaming": True}


async def cancel(d: Daemon, conn: Connection, msg: dict) -> dict:
    job = d.store.get(p.arg(msg, "job", str))
    return {"message": await d.supervisor.cancel(job), "job": job.record()}


def _control(name: str):
    async def handler(d: Daemon, conn: Connection, msg: dict) -> dict:
        job = d.store.get(p.arg(msg, "job", str))
        return {"message": d.supervisor.control(job, name), "job": job.record()}
    handler.__doc__ = f"Ask a running engine to {name}."
    return handler


async def resume(d: Daemon, conn: Connection, msg: dict) -> dict:
    job = d.store.get(p.arg(msg, "job", str))
    return {"message": d.supervisor.resume(job), "job": job.record()}


async def rm(d: Daemon, conn: Connection, msg: dict) -> dict:
    job = d.store.get(p.arg(msg, "job", str))
    if job.state in p.ACTIVE_STATES:
        raise p.ProtocolError("conflict", f"job {job.id} is {job.state}; cancel or stop it first")
    removed = [job.dir]
    if p.arg(msg, "outputs", bool, False) and job.output_dir:
        out = Path(job.output_dir)
        if out.is_dir() and out.resolve() not in (Path("/"), Path.home().resolve(), Path(job.dir).resolve()):
            await asyncio.to_thread(shutil.rmtree, out)
            removed.append(str(out))
    d.store.remove(job)
    await asyncio.to_thread(shutil.rmtree, job.dir)
    return {"removed": removed}


HANDLERS = {
    "hello": hello, "ping": ping, "status": status, "shutdown": shutdown,
    "submit": submit, "list": list_jobs, "show": show, "logs": logs, "subscribe": subscribe,
    "cancel": cancel, "stop_job": _control("stop"), "save": _control("save"),
    "sample": _control("sample"), "resume": resume, "rm": rm,
}
assert set(HANDLERS) == set(p.VERBS), "protocol.VERBS and the handlers disagree"
