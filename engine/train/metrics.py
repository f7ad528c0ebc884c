"""Where the loop's measurements go: a small sink interface (torchtune's MetricLogger shape), with the
job's events file as one sink. The trackers (TensorBoard, wandb: trackers.py) are more sinks in the loop's list,
and LatestSamples keeps the samples the model card shows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuner.engine.events import EventWriter
from tuner.engine.train.meters import Meters


@dataclass
class Samples:
    """What one validation prompt produced at one step: a file per validation size (an image or a video)."""

    nickname: str                  # the prompt's nickname, with "_ema" when the EMA weights sampled it
    prompt: str
    paths: list[Path]
    stills: list[Path] = field(default_factory=list)   # a frame strip per video, to glance at


class MetricsSink(Protocol):
    """Receives the loop's per-step scalars and its validation samples (main process only)."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """The scalars of one optimizer step: loss, lr, grad_norm (None when not measured), epoch, and
        gpu_memory: each process's [allocated, reserved, peak] bytes on its GPU, in process order."""

    def log_samples(self, step: int, samples: Samples) -> None:
        """The files one validation prompt produced at `step`."""

    def close(self) -> None:
        """Flush and let go of what the sink holds; called once when training ends, also on failure."""


class EventsSink:
    """The job's events file: `progress` at a steady pace and `memory` now and then (as Meters decides),
    one `validation` per prompt. The daemon and the TUI read these payloads; their keys must not change."""

    def __init__(self, events: EventWriter, meters: Meters, gpu_names: list[str]):
        self.events = events
        self.meters = meters
        self.gpu_names = gpu_names  # every process's GPU, in process order (meters.device_names)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if self.meters.should_report(step):
            self.events.emit("progress", step=step, total=self.meters.total, epoch=metrics["epoch"],
                             loss=metrics["loss"], lr=metrics["lr"], grad_norm=metrics["grad_norm"],
                             **self.meters.rates(step))
        if self.meters.should_report_memory():
            self.events.emit("memory", **self.meters.memory(metrics.get("gpu_memory"), self.gpu_names))

    def log_samples(self, step: int, samples: Samples) -> None:
        self.events.emit("validation", prompt=samples.prompt, nickname=samples.nickname, step=step,
                         paths=[str(p) for p in samples.paths],
                         **({"stills": [str(p) for p in samples.stills]} if samples.stills else {}))

    def close(self) -> None:
        """Nothing to let go of: the events file belongs to the job, which writes more after training."""


class LatestSamples:
    """Keeps each prompt's latest validation samples: the model card's gallery."""

    def __init__(self) -> None:
        self.latest: dict[str, tuple[int, Samples]] = {}

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Scalars are not its business."""

    def log_samples(self, step: int, samples: Samples) -> None:
        self.latest[samples.nickname] = (step, samples)

    def close(self) -> None:
        """Holds only paths."""

    def of(self, ema: bool) -> list[tuple[int, Samples]]:
        """The samples the trained weights made (ema=False) or the EMA weights made (ema=True)."""
        return [(step, s) for step, s in self.latest.values() if s.nickname.endswith("_ema") == ema]
