"""Which queued job starts next and on which GPUs: first in, first out, whole GPUs per job."""
from __future__ import annotations

from tuner.daemon import protocol as p
from tuner.daemon.jobs import Job


class Scheduler:
    """Hands out GPU ids to jobs; with no GPUs, one job at a time runs on the CPU."""

    def __init__(self, gpus: list[str]):
        self.gpus = list(gpus)

    def check(self, wanted: int) -> str | None:
        """Why a job wanting `wanted` GPUs could never start here, or None."""
        if self.gpus and wanted > len(self.gpus):
            return f"the job wants {wanted} GPUs but tunerd has {len(self.gpus)} ({', '.join(self.gpus)})"
        return None

    def next_starts(self, jobs: list[Job]) -> list[tuple[Job, list[str]]]:
        """The queued jobs that can start now, each with the GPU ids it gets."""
        active = [j for j in jobs if j.state in p.ACTIVE_STATES]
        queued = sorted((j for j in jobs if j.state == p.QUEUED), key=lambda j: (j.updated, j.id))
        if not self.gpus:
            return [(queued[0], [])] if queued and not active else []
        busy = {d for j in active for d in j.devices}
        free = [g for g in self.gpus if g not in busy]
        starts = []
        for job in queued:
            # Strict FIFO: a big job at the head waits for GPUs rather than being overtaken
            # forever by small ones.
            want = max(job.gpus, 0)
            if want == 0:
                if any(j.gpus == 0 for j in active) or any(j.gpus == 0 for j, _ in starts):
                    break
                starts.append((job, []))
                continue
            if want > len(free):
                break
            starts.append((job, free[:want]))
            free = free[want:]
        return starts
