"""Short requests to tunerd for the screens (job list, controls, submit, start); torch-free."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tuner.daemon import lifecycle
from tuner.daemon import protocol as p
from tuner.daemon.client import AsyncClient
from tuner.engine import families

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
            _models[job["id"]] = model_label(config)
        except (OSError, ValueError, KeyError) as e:
            return f"? ({e.__class__.__name__})"
    return _models[job["id"]]


def model_label(config: dict[str, Any]) -> str:
    """The model a config trains, short: the checkpoint's name, with the family when the name does not say it."""
    keys = {(k[2:] if k.startswith("--") else k): v for k, v in config.items()}
    family = str(keys.get("model_family") or "sana")
    model = keys.get("pretrained_model_name_or_path")
    if not model:
        known = family in {card.name for card in families.cards()}
        return f"{Path(families.card(family).default_model).name} (default)" if known else f"{family} (default model)"
    parts = Path(str(model)).parts
    # A folder named like the family ("models/sana") says more with its parent.
    name = "/".join(parts[-2:]) if len(parts) > 1 and parts[-1].lower() in (family, "model", "models") else parts[-1]
    return name if family.lower().replace("video", "") in name.lower().replace("-", "") else f"{name} ({family})"


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
