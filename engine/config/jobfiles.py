"""The one way a checked config becomes the files a job runs (torch-free).

`tunerd submit`, `tuner train` and the wizard's review all write a job's config.json,
multidatabackend.json and user_prompt_library.json with `job_files`, so what the user wrote and
what runs cannot drift apart. Only the keys the user set are written; every path the user gave is
made absolute, so the folder runs the same from any working directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tuner.engine.config.bundle import ConfigBundle
from tuner.engine.jobdir import CONFIG, DATABACKEND, PROMPT_LIBRARY, write_json_atomic

# Keys whose values are paths the user gave (resolved like the engine does: base_dir, then the config's folder).
TRAIN_PATH_KEYS = ("output_dir", "lycoris_config", "group_offload_to_disk_path")
# Hub ids or local folders: only a folder that exists is a path; a hub id stays as written.
MODEL_KEYS = ("pretrained_model_name_or_path", "pretrained_vae_model_name_or_path")
DATASET_PATH_KEYS = ("instance_data_dir", "cache_dir_vae", "cache_dir")
FILE_NAMES = (CONFIG, DATABACKEND, PROMPT_LIBRARY)


def job_files(bundle: ConfigBundle, folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of the three files for a job kept in `folder`, keyed by file name."""
    folder = Path(folder).absolute()
    train = bundle.train.model_dump(mode="json", exclude_unset=True)
    for key in TRAIN_PATH_KEYS:
        if train.get(key):
            train[key] = str(bundle.resolve(train[key]))
    resume = train.get("resume_from_checkpoint")
    if resume and resume != "latest":
        train["resume_from_checkpoint"] = str(bundle.resolve(resume))
    for key in MODEL_KEYS:
        value = train.get(key)
        if value and not Path(value).is_absolute() and bundle.resolve(value).exists():
            train[key] = str(bundle.resolve(value))
    datasets = []
    for ds in bundle.datasets:
        entry = ds.model_dump(mode="json", exclude_unset=True)
        for key in DATASET_PATH_KEYS:
            if entry.get(key):
                entry[key] = str(bundle.resolve(entry[key]))
        datasets.append(entry)
    # The companions are the files beside this config, whatever the user's config named; always
    # last, so the bytes do not depend on whether the user had set them.
    train.pop("data_backend_config", None)
    train.pop("user_prompt_library", None)
    train["data_backend_config"] = str(folder / DATABACKEND)
    train["user_prompt_library"] = str(folder / PROMPT_LIBRARY)
    return {CONFIG: train, DATABACKEND: datasets, PROMPT_LIBRARY: dict(bundle.prompts)}


def write_job_files(files: dict[str, Any], folder: str | os.PathLike[str]) -> list[Path]:
    """Write `job_files`' contents atomically into `folder`, config.json last (it names the other two)."""
    folder = Path(folder).absolute()
    written = []
    for name in (DATABACKEND, PROMPT_LIBRARY, CONFIG):
        write_json_atomic(folder / name, files[name])
        written.append(folder / name)
    return written
