"""A running engine that stops making progress (a deadlocked data loader, a stuck collective, a hung
GPU) is noticed: no event for the job's `stall_timeout_minutes` (longer in the phases that can be
slow between events) marks it stalled, and `stall_action: stop` ends it so it can be resumed."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from tuner.daemon.jobs import Job
from tuner.engine import jobdir
from tuner.engine.config.models import TrainConfig

# Phases whose events can be minutes apart on a real model: a VAE encode of long clips, a video
# validation sample, a checkpoint of a large optimizer state.
SLOW_PHASES = {"loading": 4.0, "caching": 4.0, "saving": 4.0, "validating": 4.0}


@dataclass
class StallSettings:
    """The job's own watchdog settings, read from the config.json it runs."""

    minutes: float = TrainConfig.model_fields["stall_timeout_minutes"].default
    action: str = TrainConfig.model_fields["stall_action"].default

    @classmethod
    def of(cls, job: Job) -> StallSettings:
        try:
            raw = json.loads((job.path / jobdir.CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        plain = {str(k).removeprefix("--"): v for k, v in raw.items()} if isinstance(raw, dict) else {}
        settings = cls()
        try:
            settings.minutes = float(plain.get("stall_timeout_minutes", settings.minutes))
        except (TypeError, ValueError):
            pass  # the engine's own validation reports it; the watchdog keeps its default
        if plain.get("stall_action") in ("warn", "stop"):
            settings.action = plain["stall_action"]
        return settings


@dataclass
class Watch:
    """What the watchdog remembers of one running job: the last seq it saw, and when."""

    settings: StallSettings
    seq: int = -1
    since: float = field(default_factory=time.monotonic)

    def check(self, job: Job, now: float | None = None) -> str | None:
        """A reason when the job has just stalled; None while it makes progress or is already marked."""
        now = time.monotonic() if now is None else now
        latest = job.latest()
        if latest["seq"] != self.seq:
            self.seq, self.since = latest["seq"], now
            return None
        if self.settings.minutes <= 0 or job.stalled:
            return None
        phase = job.last_phase() or "loading"
        limit = self.settings.minutes * 60 * SLOW_PHASES.get(phase, 1.0)
        if now - self.since < limit:
            return None
        return (f"no event from the engine for {_span(now - self.since)} while {phase} (limit {_span(limit)}, "
                "stall_timeout_minutes)")

    def progressed(self, job: Job) -> bool:
        """Whether a stalled-marked job has sent an event again."""
        return job.latest()["seq"] != self.seq


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
