"""Short requests to tunerd for the screens (job list, controls, submit, start); torch-free."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tuner.daemon import lifecycle
from tuner.daemon import protocol as p
from tuner.daemon.client import AsyncClient

NOT_RUNNING = p.NOT_RUNNING_MESSAGE


async def request(verb: str, **args: Any) -> dict[str, Any]:
    """One request on a fresh connection; raises DaemonNotRunning or RequestFailed."""
    client = AsyncClient()
    try:
        await client.connect()
        return await client.request(verb, **args)
    finally:
        await client.close()


_models: dict[str, str] = {}


def job_model(job: dict[str, Any]) -> str:
    """The model a job trains, from the config.json in its directory (cached: it never changes)."""
    if job["id"] not in _models:
        try:
            config = json.loads((Path(job["dir"]) / "config.json").read_text(encoding="utf-8"))
            name = config.get("pretrained_model_name_or_path") or config.get("model_family", "?")
            _models[job["id"]] = f"{config.get('model_family', '?')}: {Path(str(name)).name}"
        except (OSError, ValueError, KeyError) as e:
            return f"? ({e.__class__.__name__})"
    return _models[job["id"]]


async def jobs() -> list[dict[str, Any]]:
    """Every job with its state, progress, model, start time and ETA (ETA for running ones)."""
    client = AsyncClient()
    try:
        await client.connect()
        rows = (await client.request("list"))["jobs"]
        for job in rows:
            job["model"] = job_model(job)
            job["eta_s"] = None
            if job["state"] in p.ACTIVE_STATES:
                progress = (await client.request("show", job=job["id"])).get("progress") or {}
                job["eta_s"] = progress.get("eta_s")
        return rows
    finally:
        await client.close()


def start_daemon() -> str:
    """Start tunerd in the background (blocking: run it in a thread worker); what happened, in words."""
    already, info = lifecycle.start()
    return f"tunerd {'was already' if already else 'is now'} running (pid {info['pid']})"


def when(ts: float | None) -> str:
    """A timestamp as the user reads it: time today, else the date."""
    if not ts:
        return "-"
    local = time.localtime(ts)
    return time.strftime("%H:%M" if local[:3] == time.localtime()[:3] else "%b %d %H:%M", local)
