"""Run one training job: from a job directory (`python -m tuner.engine JOB_DIR`, what tunerd
starts, also under `accelerate launch`) or from a config folder in this terminal (`tuner train`).

A config folder is first turned into the job directory's own files by job_files, the same
function tunerd submit and the wizard use, and the run trains from those files."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tuner.engine.config import ConfigBundle, ConfigError, Issue, job_files, load_bundle, write_job_files
from tuner.engine.events import EventTail, EventWriter
from tuner.engine.launch import Launch, slurm_script
from tuner.engine.jobdir import CONFIG, EVENTS, JOB_RECORD, PREVIEWS

EXIT_DONE, EXIT_FAILED, EXIT_STOPPED = 0, 1, 3


def _is_main_process() -> bool:
    # accelerate launch sets RANK; a single process has none.
    return int(os.environ.get("RANK", "0")) == 0


class _EventLogHandler(logging.Handler):
    """Turns the engine modules' warnings into `log` events, so they reach the user, not only engine.log."""

    def __init__(self, events: EventWriter):
        super().__init__(level=logging.WARNING)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.emit("log", level=record.levelname.lower(), message=record.getMessage())


def run(config_path: Path, job_dir: Path, listener=None, base_dir: Path | None = None) -> int:
    """Load, validate and train; every outcome ends as events in job_dir/events.jsonl."""
    job_dir.mkdir(parents=True, exist_ok=True)
    clash = _foreign_config(config_path, job_dir)
    # A folder that is not a job's gets no events file either: the refusal reaches the listener only.
    events = EventWriter(job_dir / EVENTS if _is_main_process() and not clash else None)
    if listener is not None:
        events.add_listener(listener)
    if clash:
        events.emit("error", message=clash, traceback_path=None)
        events.emit("status", phase="failed", message="output_dir holds another config")
        return EXIT_FAILED
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bridge = _EventLogHandler(events)
    logging.getLogger("tuner").addHandler(bridge)
    try:
        return _run(config_path, job_dir, events, base_dir)
    finally:
        logging.getLogger("tuner").removeHandler(bridge)


def _run(config_path: Path, job_dir: Path, events: EventWriter, base_dir: Path | None) -> int:
    try:
        bundle, warnings = _job_bundle(config_path, job_dir, base_dir)
    except ConfigError as exc:
        for issue in exc.issues:
            events.emit("log", level=issue.level, message=str(issue))
        errors = [i for i in exc.issues if i.level == "error"] or exc.issues
        said = "; ".join(str(i) for i in errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        events.emit("error", message=(said if len(errors) == 1 else f"the config has {len(errors)} errors: {said}")
                    + f" (`tuner check {config_path}` lists every finding)", traceback_path=None)
        events.emit("status", phase="failed", message="invalid config")
        return EXIT_FAILED
    for warning in warnings:
        events.emit("log", level="warning", message=str(warning))

    from tuner.engine.train.control import Control
    from tuner.engine.train.loop import train

    try:
        result = train(bundle, events=events, control=Control(job_dir), preview_dir=job_dir / PREVIEWS)
    except KeyboardInterrupt:
        events.emit("status", phase="stopped", message="interrupted (Ctrl-C); resume from the latest checkpoint")
        return EXIT_STOPPED
    except Exception as exc:  # every failure becomes an event the user sees, with the traceback kept
        where = job_dir / "traceback.txt"
        where.write_text(traceback.format_exc())
        traceback.print_exc()
        message = _user_message(exc)
        if type(exc).__name__ == "OutOfMemoryError":  # torch's, CUDA's or MPS's: say what fits instead
            from tuner.engine.train import oom

            message = oom.message_for(bundle.train, job_dir / EVENTS, bundle.resolve(bundle.train.output_dir))
        events.emit("error", message=message, traceback_path=str(where))
        events.emit("status", phase="failed", message=type(exc).__name__)
        return EXIT_FAILED
    return EXIT_STOPPED if result.stopped else EXIT_DONE


def _config_folder(config_path: Path) -> Path:
    return (config_path if config_path.is_dir() else config_path.parent).resolve()


def _foreign_config(config_path: Path, job_dir: Path, ours: dict[str, Any] | None = None) -> str | None:
    """Why the job's files may not be written into job_dir: a config.json there that no run wrote.

    `ours` is the config.json this run would write: finding exactly it there is this same job,
    written by another machine of the run that shares the filesystem (or by an earlier try)."""
    job_dir = job_dir.resolve()
    if _config_folder(config_path) == job_dir or not (job_dir / CONFIG).exists():
        return None
    if (job_dir / EVENTS).exists() or (job_dir / JOB_RECORD).exists():
        return None  # an earlier run's job files: this run's replace them
    if ours is not None and _json_or_none(job_dir / CONFIG) == ours:
        return None
    return (f"{job_dir / CONFIG} is not a job's file, and the run writes its own config.json into its job "
            f"folder ({job_dir}, the output_dir); set output_dir to another folder, or run that folder itself")


def _json_or_none(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _job_bundle(config_path: Path, job_dir: Path, base_dir: Path | None) -> tuple[ConfigBundle, list[Issue]]:
    """What trains, and the config's warnings: a config folder becomes job_dir's own files first."""
    bundle = load_bundle(config_path, base_dir=base_dir)
    if _config_folder(config_path) == job_dir.resolve():
        return bundle, bundle.warnings
    write_job_files(job_files(bundle, job_dir), job_dir)
    # The job's files, read back as tunerd's engine reads them; warnings stay the user's config's,
    # which also name the keys the job's files leave out (ignored SimpleTuner options).
    return load_bundle(job_dir, base_dir=base_dir), bundle.warnings


def _user_message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + " …"


def run_job_dir(job_dir: str | os.PathLike[str]) -> int:
    """The daemon's entry: the job directory holds config.json and the other files."""
    job_dir = Path(job_dir).resolve()
    return run(job_dir, job_dir)


def command(args: Any) -> int:
    """`tuner train PATH`: a config folder, a config.json or a job directory, watched live; with
    --num-processes / --num-machines, on this machine's share of the processes."""
    launch = Launch(args.num_processes, args.num_machines, args.machine_rank, args.main_process_ip,
                    args.main_process_port)
    for problem in launch.problems():
        print(f"tuner train: {problem}", file=sys.stderr)
    if launch.problems():
        return EXIT_FAILED
    path = Path(args.path).resolve()
    if (path / JOB_RECORD).is_file() or (path / EVENTS).is_file():
        job_dir = path
    else:
        bundle = _bundle_or_say_why(path)
        if bundle is None:
            return EXIT_FAILED
        job_dir = bundle.resolve(bundle.train.output_dir)
    if launch.distributed:
        return watch(lambda listener: launched(path, job_dir, launch, listener), plain=args.plain, title=path.name)
    return watch(lambda listener: run(path, job_dir, listener), plain=args.plain, title=path.name)


def _bundle_or_say_why(path: Path) -> ConfigBundle | None:
    """The loaded config folder, or None after printing every problem it has."""
    try:
        return load_bundle(path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        print(f"{len(exc.issues)} problem(s); nothing was trained.", file=sys.stderr)
        return None


def launched(config_path: Path, job_dir: Path, launch: Launch, listener) -> int:
    """Write the job's files, start this machine's processes through accelerate's launcher, and
    feed the job's events (written by rank 0) to `listener` until they exit."""
    job_dir.mkdir(parents=True, exist_ok=True)
    if _config_folder(config_path) != job_dir.resolve():
        bundle = _bundle_or_say_why(config_path)
        if bundle is None:
            return EXIT_FAILED
        files = job_files(bundle, job_dir)
        # Every machine writes the same files: over a shared filesystem the later ones find the first's.
        clash = _foreign_config(config_path, job_dir, ours=files[CONFIG])
        if clash:
            print(f"tuner train: {clash}", file=sys.stderr)
            return EXIT_FAILED
        write_job_files(files, job_dir)
        for warning in bundle.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    events = job_dir / EVENTS
    tail = EventTail(events, events.stat().st_size if events.exists() else 0)  # this run's events only
    proc = subprocess.Popen(launch.argv(job_dir), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if launch.machine_rank:
        print(f"machine rank {launch.machine_rank}: its processes run; machine rank 0 shows the progress",
              file=sys.stderr)
    try:
        while proc.poll() is None:
            for event in tail.read_new():
                listener(event)
            time.sleep(0.2)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait()
    for event in tail.read_new():
        listener(event)
    return proc.returncode if proc.returncode in (EXIT_DONE, EXIT_STOPPED) else EXIT_FAILED


def slurm_command(args: Any) -> int:
    """`tuner slurm PATH --nodes M --gpus-per-node G`: the job's files and an sbatch script for them."""
    path = Path(args.path).resolve()
    bundle = _bundle_or_say_why(path)
    if bundle is None:
        return EXIT_FAILED
    job_dir = bundle.resolve(bundle.train.output_dir)
    clash = _foreign_config(path, job_dir)
    if clash:
        print(f"tuner slurm: {clash}", file=sys.stderr)
        return EXIT_FAILED
    write_job_files(job_files(bundle, job_dir), job_dir)
    script = Path(args.out).resolve() if args.out else job_dir / "train.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(slurm_script(job_dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                   name=f"tuner-{path.name}", partition=args.partition, time_limit=args.time,
                                   port=args.port))
    print(f"wrote {script}: {args.nodes} node(s) × {args.gpus_per_node} GPU(s), the job's files in {job_dir}")
    print(f"submit it: sbatch {script}    (its output: {job_dir}/slurm-<jobid>.log; rank 0's events: "
          f"{job_dir / EVENTS})")
    return 0


def watch(run_fn, *, plain: bool, title: str) -> int:
    """Run `run_fn(listener)` with a live display (or plain lines) fed by its events."""
    from rich.console import Console

    console = Console(stderr=False)
    if plain or not console.is_terminal:
        return run_fn(lambda e: print(_plain(e), flush=True))
    from rich.live import Live

    from tuner.engine.liveview import LiveView

    view = LiveView(title=title)
    with Live(view, console=console, refresh_per_second=4, transient=False):
        code = run_fn(view.feed)
    return code


def _plain(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "progress":
        return (f"step {event['step']}/{event['total']}  loss {event['loss']:.4f}  lr {event['lr']:.2e}  "
                f"{event.get('steps_per_s', 0):.2f} it/s  eta {event.get('eta_s', 0):.0f}s")
    fields = {k: v for k, v in event.items() if k not in ("seq", "time", "type")}
    return f"{kind}: " + "  ".join(f"{k}={v}" for k, v in fields.items())

