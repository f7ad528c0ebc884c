"""Turning a config folder (or a preset + dataset) into a validated job directory."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from tuner.daemon import protocol as p
from tuner.daemon.jobs import Job
from tuner.engine import jobdir

log = logging.getLogger("tunerd.submit")

# Keys whose values are paths; made absolute so the job runs from any working directory.
CONFIG_PATH_KEYS = ("output_dir", "lycoris_config", "group_offload_to_disk_path", "cache_dir")
# Hub ids or local folders: rewritten only when a local folder of that name exists.
CONFIG_MODEL_KEYS = ("pretrained_model_name_or_path", "pretrained_vae_model_name_or_path",
                     "pretrained_transformer_model_name_or_path")
DATASET_PATH_KEYS = ("instance_data_dir", "cache_dir_vae", "cache_dir")


def _resolve(value: str, cwd: Path, config_dir: Path) -> str:
    from tuner.engine.config import resolve_path  # the engine's own rule: cwd first, then the config's folder
    return str(resolve_path(value, cwd, config_dir))


def _key(config: dict[str, Any], name: str) -> str | None:
    """The spelling of `name` in a SimpleTuner config (`name` or `--name`), if present."""
    for spelling in (name, f"--{name}"):
        if spelling in config:
            return spelling
    return None


def _read_json(path: Path, what: str, kind: type) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise p.ProtocolError("invalid", f"{path}: not found ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise p.ProtocolError("invalid", f"{path}: cannot read {what}: {e}") from None
    if not isinstance(data, kind):
        raise p.ProtocolError("invalid", f"{path}: {what} must be a JSON {'object' if kind is dict else 'array'}")
    return data


def read_bundle(source: Path, cwd: Path) -> tuple[dict, list | None, dict | None, Path]:
    """The config, datasets and prompt library a submitted path names, with absolute paths."""
    if not source.exists():
        raise p.ProtocolError("invalid", f"{source}: not found; give a config folder or a config.json")
    config_file = source / jobdir.CONFIG if source.is_dir() else source
    if config_file.suffix != ".json":
        raise p.ProtocolError("invalid", f"{source}: expected a config folder or a config.json")
    config_dir = config_file.parent
    config = _read_json(config_file, "the config", dict)

    def locate(key: str, default_name: str) -> Path | None:
        spelling = _key(config, key)
        if spelling and isinstance(config[spelling], str):
            return Path(_resolve(config[spelling], cwd, config_dir))
        fallback = config_dir / default_name
        return fallback if fallback.exists() else None

    backend = locate("data_backend_config", jobdir.DATABACKEND)
    prompts = locate("user_prompt_library", jobdir.PROMPT_LIBRARY)
    datasets = _read_json(backend, "data_backend_config", list) if backend else None
    library = _read_json(prompts, "user_prompt_library", dict) if prompts else None
    for name in CONFIG_PATH_KEYS:
        spelling = _key(config, name)
        if spelling and isinstance(config[spelling], str) and config[spelling]:
            config[spelling] = _resolve(config[spelling], cwd, config_dir)
    for name in CONFIG_MODEL_KEYS:
        spelling = _key(config, name)
        if spelling and isinstance(config[spelling], str):
            local = Path(_resolve(config[spelling], cwd, config_dir))
            if local.exists():
                config[spelling] = str(local)
    for entry in datasets or []:
        if not isinstance(entry, dict):
            continue  # the config check names it
        for name in DATASET_PATH_KEYS:
            if isinstance(entry.get(name), str) and entry[name]:
                entry[name] = _resolve(entry[name], cwd, config_dir)
    return config, datasets, library, config_dir


def quick_bundle(preset: str, dataset: str, output: str, cwd: Path) -> tuple[dict, list, None, Path]:
    """A config and one dataset entry from a preset, for `tunerd submit --preset`."""
    from tuner.presets import apply_preset, load_preset

    try:
        chosen = load_preset(preset)
    except (ValueError, FileNotFoundError) as e:
        raise p.ProtocolError("invalid", f"preset {preset!r}: {e}") from None
    data = Path(_resolve(dataset, cwd, cwd))
    if not data.is_dir():
        raise p.ProtocolError("invalid", f"--dataset {dataset}: not a folder")
    out = Path(_resolve(output, cwd, cwd))
    config = {"output_dir": str(out)}
    datasets = [
        {"id": data.name or "dataset", "type": "local", "dataset_type": "image", "instance_data_dir": str(data),
         "caption_strategy": "textfile", "cache_dir_vae": str(out / "cache" / "vae" / (data.name or "dataset"))},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": str(out / "cache" / "text")},
    ]
    config, datasets = apply_preset(chosen, config, datasets)
    return config, datasets, None, cwd


def check(folder: Path, cwd: Path) -> tuple[list[str], list[str]]:
    """The engine's errors and warnings for the job folder, as 'file: key: message' lines."""
    try:
        from tuner.engine.config import check_bundle
    except ImportError as e:
        log.warning("cannot validate configs (%s); queueing without a check", e)
        return [], [f"not validated before queueing: {e}"]
    issues = check_bundle(folder / jobdir.CONFIG, base_dir=cwd)
    errors = [str(i) for i in issues if i.level == "error"]
    warnings = [str(i) for i in issues if i.level != "error"]
    return errors, warnings


def job_name(bundle: tuple, given: str | None) -> str:
    """What the job id is named after: the given name, the tracker run name, or the folder's name."""
    config, _, _, config_dir = bundle
    folder = config_dir.name if config_dir.name != "config" else config_dir.parent.name
    return str(given or config.get("tracker_run_name") or folder or "job")


def stage(job_id: str, staging: Path, bundle: tuple, cwd: Path, source: str, name: str,
          gpus: int) -> tuple[Job, list[str]]:
    """Write the job directory into `staging`, validate it, and move it to its place; not yet queued."""
    config, datasets, library, _ = bundle
    final = staging.parent / job_id
    try:
        if datasets is not None:
            config.pop("--data_backend_config", None)
            config["data_backend_config"] = str(final / jobdir.DATABACKEND)
            jobdir.write_json_atomic(staging / jobdir.DATABACKEND, datasets)
        if library is not None:
            config.pop("--user_prompt_library", None)
            config["user_prompt_library"] = str(final / jobdir.PROMPT_LIBRARY)
            jobdir.write_json_atomic(staging / jobdir.PROMPT_LIBRARY, library)
        # The job's config names its files at their final place, which does not exist yet:
        # the check reads a copy that points into the staging folder.
        probe = dict(config)
        if datasets is not None:
            probe["data_backend_config"] = str(staging / jobdir.DATABACKEND)
        if library is not None:
            probe["user_prompt_library"] = str(staging / jobdir.PROMPT_LIBRARY)
        jobdir.write_json_atomic(staging / jobdir.CONFIG, probe)
        errors, warnings = check(staging, cwd)
        # Name the files where the job keeps them, not where they were checked.
        errors = [e.replace(staging.name, final.name) for e in errors]
        warnings = [w.replace(staging.name, final.name) for w in warnings]
        if errors:
            raise p.ProtocolError("invalid", f"{source}: {len(errors)} error(s); nothing was queued:\n"
                                  + "\n".join(f"  {e}" for e in errors), errors=errors, warnings=warnings)
        jobdir.write_json_atomic(staging / jobdir.CONFIG, config)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    output = config.get("output_dir") or config.get("--output_dir") or ""
    job = Job(id=job_id, dir=str(final), name=name, source=source, gpus=gpus, output_dir=str(output),
              reason="submitted")
    return job, warnings
