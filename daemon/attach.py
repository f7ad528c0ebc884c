"""`tunerd attach`: a rich live view of one job's stream; Ctrl-C detaches and the job goes on."""
from __future__ import annotations

import asyncio

from rich.console import Console
from rich.live import Live

from tuner.daemon.client import follow
from tuner.engine.liveview import LiveView


async def _watch(job: str, view: LiveView, live: Live) -> None:
    async for message in follow(job):
        view.feed_message(message)
        if message.get("end"):
            live.refresh()
            return


def attach(job: str) -> int:
    """Show `job` live until it ends or the user presses Ctrl-C."""
    console = Console()
    view = LiveView(title=f"tunerd attach {job}", subtitle="Ctrl-C detaches; the job goes on")
    try:
        with Live(view, console=console, refresh_per_second=4) as live:
            asyncio.run(_watch(job, view, live))
    except KeyboardInterrupt:
        console.print(f"detached from {job}; it goes on (tunerd attach {job} to come back)")
        return 0
    console.print(f"{job}: {view.job.state}" + (f" — {view.job.reason}" if view.job.reason else ""))
    return 0
