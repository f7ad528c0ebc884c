"""Trackers as metrics sinks (report_to): TensorBoard and Weights & Biases, on the main process only.

Each tracker is a backend behind one `TrackerSink`, which turns the loop's metrics into the same
series for all of them: train/loss, train/lr, train/grad_norm, train/epoch, speed/*, memory/*, the
validation samples per prompt nickname, and the resolved config as hyperparameters. A tracker that
cannot start, or fails later, is one warning event and training goes on without it.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil
import torch

from tuner.engine.events import EventWriter
from tuner.engine.train.meters import MEMORY_EVERY_S, Meters
from tuner.engine.train.metrics import MetricsSink, Samples

if TYPE_CHECKING:
    from tuner.engine.config import ConfigBundle

log = logging.getLogger("tuner.trackers")

TRACKERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"   # under output_dir; one run folder per tracker_run_name below it
WANDB_RUN_ID = "wandb-run-id"    # in output_dir: the id of the wandb run a resume continues
WANDB_INIT_TIMEOUT_S = 20         # an online start that cannot reach the server falls back to offline after this
GIB = 1024 ** 3


def tracker_names(report_to: str) -> list[str]:
    """The trackers report_to asks for ("all": every one tuner has)."""
    asked = [name for name in report_to.split(",") if name and name != "none"]
    return list(TRACKERS) if "all" in asked else [name for name in TRACKERS if name in asked]


def run_name(bundle: ConfigBundle) -> str:
    """The run's name in every tracker: tracker_run_name, else the output folder's name."""
    return bundle.train.tracker_run_name or bundle.resolve(bundle.train.output_dir).name


def tensorboard_dir(bundle: ConfigBundle) -> Path:
    """Where the TensorBoard run of this config writes (`tensorboard --logdir` its parent)."""
    return bundle.resolve(bundle.train.output_dir) / TENSORBOARD_DIR / run_name(bundle)


def result_paths(bundle: ConfigBundle) -> dict[str, str]:
    """What the trackers left on disk, for the done event's paths."""
    folder = tensorboard_dir(bundle)
    wanted = "tensorboard" in tracker_names(bundle.train.report_to)
    return {"tensorboard": str(folder)} if wanted and folder.is_dir() else {}


class Backend(Protocol):
    """What one tracker library does for TrackerSink."""

    def scalars(self, step: int, values: dict[str, float]) -> None: ...
    def image(self, step: int, tag: str, path: Path, caption: str) -> None: ...
    def video(self, step: int, tag: str, path: Path, still: Path | None, caption: str) -> None: ...
    def close(self) -> None: ...


class TrackerSink:
    """A MetricsSink that sends the loop's metrics and samples to one tracker backend."""

    def __init__(self, name: str, backend: Backend, meters: Meters, device: torch.device):
        self.name = name
        self.backend = backend
        self.meters = meters
        self.device = device
        self.last_memory = float("-inf")
        self.gpus = _GpuMemory() if device.type == "cuda" else None

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        values = {"train/loss": metrics["loss"], "train/lr": metrics["lr"], "train/epoch": metrics["epoch"]}
        if metrics.get("grad_norm") is not None:
            values["train/grad_norm"] = metrics["grad_norm"]
        rates = self.meters.rates(step)
        values["speed/steps_per_s"] = rates["steps_per_s"]
        values["speed/samples_per_s"] = rates["samples_per_s"]
        now = time.monotonic()
        if now - self.last_memory >= MEMORY_EVERY_S:
            self.last_memory = now
            values.update(self._memory())
        self.backend.scalars(step, {k: float(v) for k, v in values.items()})

    def log_samples(self, step: int, samples: Samples) -> None:
        for i, path in enumerate(samples.paths):
            # One tag per prompt nickname; a second validation size gets its own tag beside it.
            size = path.stem[len(samples.nickname) + 1:] if path.stem.startswith(samples.nickname + "-") else path.stem
            tag = f"validation/{samples.nickname}" + (f"/{size}" if len(samples.paths) > 1 else "")
            if path.suffix == ".mp4":
                still = samples.stills[i] if i < len(samples.stills) else None
                self.backend.video(step, tag, path, still, samples.prompt)
            else:
                self.backend.image(step, tag, path, samples.prompt)

    def close(self) -> None:
        self.backend.close()

    def _memory(self) -> dict[str, float]:
        values = {"memory/rss_gib": psutil.Process().memory_info().rss / GIB}
        if self.device.type == "cuda":
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            values["memory/allocated_gib"] = torch.cuda.memory_allocated(index) / GIB
            values["memory/peak_gib"] = torch.cuda.max_memory_allocated(index) / GIB
            # Every process's use of every GPU the job sees (this process only allocates on its own).
            for n, used in enumerate(self.gpus.used() if self.gpus is not None else []):
                values[f"memory/gpu{n}_used_gib"] = used / GIB
        return values


class Guarded:
    """A tracker sink whose failures cost one warning: after the first, it is left alone."""

    def __init__(self, name: str, sink: MetricsSink, events: EventWriter):
        self.name = name
        self.sink = sink
        self.events = events
        self.failed = False

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._call("log", step, metrics)

    def log_samples(self, step: int, samples: Samples) -> None:
        self._call("log_samples", step, samples)

    def close(self) -> None:
        self._call("close")

    def _call(self, method: str, *args: Any) -> None:
        if self.failed:
            return
        try:
            getattr(self.sink, method)(*args)
        except Exception as exc:  # a tracker never stops training: said once, then it is left out
            self.failed = True
            self.events.emit("log", level="warning",
                             message=f"report_to {self.name}: the tracker failed ({type(exc).__name__}: {exc}); "
                                     "training goes on without it, every metric is still in the job's events")


def start(bundle: ConfigBundle, output_dir: Path, events: EventWriter, meters: Meters,
          device: torch.device) -> list[MetricsSink]:
    """The sinks of the trackers report_to names (call on the main process); those that cannot start are warned about."""
    cfg = bundle.train
    asked = tracker_names(cfg.report_to)
    sinks: list[MetricsSink] = []
    for name in asked:
        try:
            backend = OPENERS[name](bundle, output_dir, events)
        except Exception as exc:  # not installed, not logged in, no network: the run goes on without it
            if isinstance(exc, ImportError) and "all" in cfg.report_to.split(","):
                # "all" means the trackers that are installed.
                events.emit("log", level="info", message=f"report_to all: {_why(name, exc)}, so it is left out")
            else:
                events.emit("log", level="warning", message=f"report_to {name}: {_why(name, exc)}; training goes "
                            "on without it, every metric is still in the job's events")
            continue
        sinks.append(Guarded(name, TrackerSink(name, backend, meters, device), events))
    return sinks


def _why(name: str, exc: Exception) -> str:
    if isinstance(exc, ImportError):
        return f"the {name} package is not installed (pip install {name})"
    return f"could not start ({type(exc).__name__}: {exc})"


def hyperparameters(bundle: ConfigBundle) -> dict[str, Any]:
    """The resolved config (every setting, defaults included) and the datasets, as plain JSON values."""
    config = bundle.train.model_dump(mode="json")
    config["datasets"] = [ds.model_dump(mode="json", exclude_none=True) for ds in bundle.datasets]
    return config


# --- TensorBoard -------------------------------------------------------------------------------

class TensorBoard:
    """torch's SummaryWriter into output_dir/tensorboard/<run name>."""

    def __init__(self, bundle: ConfigBundle, output_dir: Path, events: EventWriter):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without the tensorboard package
        from torch.utils.tensorboard.summary import hparams

        self.folder = tensorboard_dir(bundle)
        self.writer = SummaryWriter(str(self.folder), flush_secs=10)
        config = hyperparameters(bundle)
        flat = {k: _hparam_value(v) for k, v in config.items() if k != "datasets"}
        # Written into this run (add_hparams would start a run of its own beside it).
        for summary in hparams(flat, {"train/loss": 0.0}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```", 0)
        events.emit("log", level="info", message=f"TensorBoard logs: {self.folder}; watch them with "
                    f"`tensorboard --logdir {self.folder.parent}`")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, step: int, tag: str, path: Path, caption: str) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as picture:
            self.writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")
        self.writer.flush()

    def video(self, step: int, tag: str, path: Path, still: Path | None, caption: str) -> None:
        # TensorBoard's videos need moviepy to encode a GIF; the still strip shows the clip's frames instead.
        if still is not None:
            self.image(step, tag, still, caption)

    def close(self) -> None:
        self.writer.close()


def _hparam_value(value: Any) -> Any:
    """TensorBoard's hyperparameters take numbers, strings and booleans."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return "none" if value is None else json.dumps(value)


# --- Weights & Biases --------------------------------------------------------------------------

class Wandb:
    """A wandb run in output_dir/wandb: online when logged in and reachable, else offline (wandb sync uploads it)."""

    def __init__(self, bundle: ConfigBundle, output_dir: Path, events: EventWriter):
        import wandb

        self.wandb = wandb
        output_dir.mkdir(parents=True, exist_ok=True)
        cfg = bundle.train
        # A resumed run logs on into the wandb run it continues (one chart per training, as in
        # SimpleTuner); a fresh run starts a new one and remembers its id for its own resumes.
        id_file = output_dir / WANDB_RUN_ID
        earlier = id_file.read_text().strip() if cfg.resume_from_checkpoint and id_file.is_file() else ""
        args = dict(project=cfg.tracker_project_name, name=run_name(bundle), dir=str(output_dir),
                    config=hyperparameters(bundle), **({"id": earlier, "resume": "allow"} if earlier else {}),
                    settings=wandb.Settings(console="off", silent=True, init_timeout=WANDB_INIT_TIMEOUT_S))
        chosen = os.environ.get("WANDB_MODE")
        try:
            self.run, offline_because = wandb.init(**args), None
        except wandb.errors.Error as exc:
            if chosen:  # the user asked for this mode: no quiet fallback to another
                raise
            # Not logged in, or the server is out of reach: keep the run on disk to sync later.
            self.run, offline_because = wandb.init(mode="offline", **args), exc
        id_file.write_text(self.run.id + "\n")
        if offline_because is not None:
            folder = Path(self.run.dir).parent
            events.emit("log", level="warning",
                        message=f"report_to wandb: cannot log online ({_first_line(offline_because)}); the run is kept "
                                f"offline in {folder}; upload it later with `wandb sync {folder}` (after `wandb login`)")
            return
        where = "offline, in " + str(Path(self.run.dir).parent) if self.run.settings.mode == "offline" else self.run.url
        events.emit("log", level="info", message=f"wandb run {self.run.name}" + (" (continued)" if earlier else "")
                    + f": {where}")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def image(self, step: int, tag: str, path: Path, caption: str) -> None:
        self.run.log({tag: self.wandb.Image(str(path), caption=caption)}, step=step)

    def video(self, step: int, tag: str, path: Path, still: Path | None, caption: str) -> None:
        self.run.log({tag: self.wandb.Video(str(path), caption=caption, format="mp4")}, step=step)

    def close(self) -> None:
        self.run.finish()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class _GpuMemory:
    """GPU-wide used memory of the GPUs this process sees, through NVML (empty where NVML is missing)."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        try:
            import pynvml
        except ImportError:
            log.info("nvidia-ml-py is not installed: the trackers get this process's GPU memory only")
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            log.info("NVML does not start (%s): the trackers get this process's GPU memory only", exc)
            return
        self.pynvml = pynvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [s.strip() for s in visible.split(",") if s.strip()] if visible is not None else \
            [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        for gpu in ids:
            try:
                self.handles.append(pynvml.nvmlDeviceGetHandleByIndex(int(gpu)) if gpu.isdigit()
                                    else pynvml.nvmlDeviceGetHandleByUUID(gpu))
            except pynvml.NVMLError as exc:
                log.info("NVML cannot read GPU %s: %s", gpu, exc)

    def used(self) -> list[int]:
        try:
            return [int(self.pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in self.handles]
        except self.pynvml.NVMLError as exc:  # a GPU gone from NVML: its memory is left out from here on
            log.warning("NVML stopped answering (%s); the trackers get this process's GPU memory only", exc)
            self.handles = []
            return []


OPENERS = {"tensorboard": TensorBoard, "wandb": Wandb}
