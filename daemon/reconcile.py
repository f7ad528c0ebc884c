"""On start, check every job the records call active against the processes really running."""
from __future__ import annotations

import logging

from tuner.daemon import protocol as p
from tuner.daemon import runner
from tuner.daemon.jobs import Job, JobStore

log = logging.getLogger("tunerd.reconcile")


def reconcile(store: JobStore) -> list[Job]:
    """Settle jobs whose engine is gone; return the live ones to re-adopt (pid and start time match)."""
    adopt = []
    for job in sorted(store.jobs.values(), key=lambda j: j.id):
        if job.state not in p.ACTIVE_STATES:
            continue
        if job.state != p.STARTING and runner.is_alive(job.pid, job.create_time):
            log.info("job %s: engine pid %s is still running; following it again", job.id, job.pid)
            adopt.append(job)
            continue
        if job.state == p.STARTING:
            # The daemon died between claiming GPUs and recording a pid: nothing to follow.
            state, reason = p.INTERRUPTED, "tunerd stopped while starting the engine; `tunerd resume` starts it again"
        else:
            state, reason = runner.final_state(job, None, watched=False)
        store.transition(job, state, reason, devices=[])
    return adopt
