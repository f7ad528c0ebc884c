"""Turning a config folder (or a preset + dataset) into a job directory: the engine's own check,
then the engine's own job files (tuner.engine.config.jobfiles), so what runs is what was checked."""
from __future__ import annotations

import shutil
from pathlib import Path

from tuner.daemon import protocol as p
from tuner.daemon.jobs import Job
from tuner.engine import jobdir
from tuner.engine.config import (
    ConfigBundle, ConfigError, Issue, check_data, job_files, load_bundle, resolve_path, write_job_files,
)


def _refuse(source: str, issues: list[Issue]) -> p.ProtocolError:
    errors = [str(i) for i in issues if i.level == "error"]
    warnings = [str(i) for i in issues if i.level != "error"]
    return p.ProtocolError("invalid", f"{source}: {len(errors)} error(s); nothing was queued:\n"
                           + "\n".join(f"  {e}" for e in errors), errors=errors, warnings=warnings)


def read_bundle(source: Path, cwd: Path) -> ConfigBundle:
    """The checked config a submitted path names, its relative paths read from the client's `cwd`."""
    try:
        return load_bundle(source, base_dir=cwd)
    except ConfigError as exc:
        raise _refuse(str(source), exc.issues) from None


def quick_bundle(preset: str, dataset: str, output: str, cwd: Path) -> ConfigBundle:
    """A checked config and one dataset entry from a preset, for `tunerd submit --preset`."""
    from tuner.presets import apply_preset, load_preset

    try:
        chosen = load_preset(preset)
    except (ValueError, FileNotFoundError) as e:
        raise p.ProtocolError("invalid", f"preset {preset!r}: {e}") from None
    data = resolve_path(dataset, cwd, cwd)
    if not data.is_dir():
        raise p.ProtocolError("invalid", f"--dataset {dataset}: not a folder")
    out = resolve_path(output, cwd, cwd)
    config = {"output_dir": str(out)}
    datasets = [
        {"id": data.name or "dataset", "type": "local", "dataset_type": "image", "instance_data_dir": str(data),
         "caption_strategy": "textfile", "cache_dir_vae": str(out / "cache" / "vae" / (data.name or "dataset"))},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(out / "cache" / "text")},
    ]
    config, datasets = apply_preset(chosen, config, datasets)
    bundle, issues = check_data(config, datasets, None, base_dir=cwd, config_path=cwd / jobdir.CONFIG)
    for issue in issues:
        issue.file = Path(issue.file).name  # no such file exists yet: name the one the job will hold
    if bundle is None:
        raise _refuse(f"preset {preset} on {dataset}", issues)
    return bundle


def job_name(bundle: ConfigBundle, given: str | None) -> str:
    """What the job id is named after: the given name, the tracker run name, or the config folder's name."""
    config_dir = bundle.config_path.parent
    folder = config_dir.name if config_dir.name != "config" else config_dir.parent.name
    return str(given or bundle.train.tracker_run_name or folder or "job")


def unique_name(name: str, taken: set[str]) -> str:
    """`name`, or `name-2`, `name-3` … when other jobs have it: a job can be named where an id is asked."""
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def stage(job_id: str, staging: Path, bundle: ConfigBundle, source: str, name: str, gpus: int) -> Job:
    """Write the job's files into `staging`, naming the folder it moves to; not yet queued."""
    final = staging.parent / job_id
    files = job_files(bundle, final)
    try:
        write_job_files(files, staging)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Job(id=job_id, dir=str(final), name=name, source=source, gpus=gpus,
               output_dir=str(files[jobdir.CONFIG].get("output_dir", "")), reason="submitted")
