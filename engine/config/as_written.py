"""A config folder's files as the user wrote them (torch-free): read them without checking, so a folder
with problems can still be opened and fixed, and write changed values back in the user's own spelling.

SimpleTuner's files spell keys `--learning_rate`, hold values as strings ("1", "true") and carry
options tuner does not act on. `job_files` writes what tuner runs; `in_user_spelling` lays that over
the user's own file: each key keeps its place and spelling, an unchanged value keeps its text, and
the options tuner only warned about stay.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tuner.engine.config.io import (  # the folder-reading steps load_bundle takes, here without the check
    DATABACKEND_NAMES, PROMPTS_NAME, _companion, _find_config, read_data,
)
from tuner.engine.config.issues import Issue


@dataclass
class AsWritten:
    """The three files' parsed contents, unchecked; None where a file is missing or unreadable (`issues` says why)."""

    config_path: Path | None
    config: Any = None
    databackend_path: Path | None = None
    datasets: Any = None
    prompts_path: Path | None = None
    prompts: Any = None
    issues: list[Issue] = field(default_factory=list)


def read_as_written(path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> AsWritten:
    """Read a config folder (or config file) and its companions the way load_bundle finds them, checking nothing."""
    base = Path(base_dir).absolute() if base_dir is not None else Path.cwd()
    config_path, issues = _find_config(Path(path).expanduser())
    found = AsWritten(config_path=config_path, issues=issues)
    if config_path is None:
        return found
    found.config, more = read_data(config_path)
    found.issues += more
    if not isinstance(found.config, dict):
        return found
    keys = {user_key(k): v for k, v in found.config.items()}
    found.databackend_path, more = _companion(keys, "data_backend_config", DATABACKEND_NAMES, config_path, base, True)
    found.issues += more
    if found.databackend_path is not None:
        found.datasets, more = read_data(found.databackend_path)
        found.issues += more
    found.prompts_path, more = _companion(keys, "user_prompt_library", (PROMPTS_NAME,), config_path, base, False)
    found.issues += more
    if found.prompts_path is not None:
        found.prompts, more = read_data(found.prompts_path)
        found.issues += more
    return found


def user_key(raw: Any) -> str:
    """A key without SimpleTuner's command-line `--`."""
    key = str(raw)
    return key[2:] if key.startswith("--") else key


def typed(model: type[BaseModel], key: str, value: Any) -> tuple[bool, Any]:
    """(True, the value as the model reads it, in JSON form) or (False, None) when the model refuses it."""
    # The other required keys (a dataset's id) get a stand-in: only this key's value is in question.
    data = {name: "x" for name, f in model.model_fields.items() if f.is_required() and name != key}
    try:
        return True, model.model_validate({**data, key: value}).model_dump(mode="json", include={key})[key]
    except (ValidationError, KeyError):
        return False, None


def in_user_spelling(written: dict[str, Any], kept: dict[str, Any], original: dict[str, Any],
                     model: type[BaseModel], renamed: dict[str, str],
                     respelled: dict[str, str] | None = None) -> dict[str, Any]:
    """`written` (what tuner runs) and `kept` (the user's keys tuner does not read, still wanted) as the
    user's own file: the user's keys first, in their order and spelling (`--`, an old name in `renamed`),
    a value that reads the same as the user's in the user's own text; then keys new to the file, with
    `--` when most of the user's keys have it. A key of the user's in neither dict is left out.
    `respelled` maps a key the user chose to rename (a misspelling) to its new name, written in its place."""
    respelled = respelled or {}
    values = {**kept, **written}
    placed: dict[str, tuple[str, str]] = {}   # key → (the user's key it stands for, the key to write)
    for raw in original:
        key = user_key(raw)
        dashes = str(raw)[: len(str(raw)) - len(key)]
        if key in respelled:
            placed[respelled[key]] = (raw, dashes + respelled[key])
        else:
            placed[renamed.get(key, key)] = (raw, raw)   # a key given twice: the later one, whose value won
    by_raw = {raw: (key, out_key) for key, (raw, out_key) in placed.items()}
    out: dict[str, Any] = {}
    for raw in original:
        if raw not in by_raw or by_raw[raw][0] not in values:
            continue
        key, out_key = by_raw[raw]
        value = values[key]
        if key in model.model_fields:
            mine, theirs = typed(model, key, value), typed(model, key, original[raw])
            if mine[0] and mine == theirs:
                value = original[raw]
        out[out_key] = value
    dashed = sum(str(k).startswith("--") for k in original) * 2 > len(original)
    for key, value in values.items():
        if key not in placed:
            out[f"--{key}" if dashed else key] = value
    return out


def datasets_in_user_spelling(written: list[dict[str, Any]], kept: list[dict[str, Any]], original: Any,
                              model: type[BaseModel], renamed: dict[str, str]) -> list[dict[str, Any]]:
    """Each written dataset in the spelling of the user's entry with the same id (else at the same place);
    `kept[i]` holds the written dataset's keys tuner does not read."""
    mine = [e for e in original if isinstance(e, dict)] if isinstance(original, list) else []
    by_id = {str(e.get("id")): e for e in mine if e.get("id") is not None}
    out = []
    for i, entry in enumerate(written):
        theirs = by_id.get(str(entry.get("id")))
        if theirs is None and i < len(mine) and mine[i].get("id") not in {e.get("id") for e in written}:
            theirs = mine[i]
        out.append(in_user_spelling(entry, kept[i] if i < len(kept) else {}, theirs or {}, model, renamed))
    return out
