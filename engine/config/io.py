"""Reading and checking config folders (config.json/.toml, multidatabackend.json, prompt library).

Every problem becomes an Issue naming the file and key; nothing stops at the first error.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tuner.engine.config.bundle import ConfigBundle, resolve_path
from tuner.engine.config.issues import FILE_KEY, ConfigError, Issue, display
from tuner.engine.config.models import DatasetConfig, TrainConfig, VideoConfig, field_choices
from tuner.engine.config.names import INSTEAD, SIMPLETUNER_DATASET_KEYS, SIMPLETUNER_OPTIONS, SIMPLETUNER_VIDEO_KEYS
from tuner.engine.config.prompt_library import TOKEN
from tuner.engine.config.rules import run_rules

CONFIG_NAMES = ("config.json", "config.toml")
DATABACKEND_NAMES = ("multidatabackend.json", "multidatabackend.toml")
PROMPTS_NAME = "user_prompt_library.json"

# SimpleTuner options that belong on a dataset in tuner (and in SimpleTuner's own dataset files).
DATASET_LEVEL_KEYS = {
    "instance_prompt", "caption_strategy", "cache_dir_vae", "cache_dir", "cache_dir_text",
    "minimum_image_size", "maximum_image_size", "target_downsample_size", "skip_file_discovery",
    "write_batch_size", "read_batch_size", "only_instance_prompt", "prepend_instance_prompt",
}
# Older SimpleTuner names still found in users' files: accepted, with a warning to rename.
RENAMED = {
    "checkpointing_steps": "checkpoint_step_interval",
    "validation_steps": "validation_step_interval",
    # SimpleTuner's flow-matching options were called flux_* before they applied to every family;
    # its SD3 quickstart's skip-layer-guidance block still uses those names.
    "flux_schedule_shift": "flow_schedule_shift",
    "flux_schedule_auto_shift": "flow_schedule_auto_shift",
    "flux_use_uniform_schedule": "flow_use_uniform_schedule",
}
DATASET_RENAMED = {"disable": "disabled", "is_regularization_data": "is_regularisation_data"}
# What to do when a key's value is out of range, beyond "must be at least N".
HINTS = {
    "checkpoints_total_limit": "remove the key to keep every checkpoint",
    "max_nan_steps": "use 1 to stop at the first non-finite loss",
    "train_batch_size": "use 1 and raise gradient_accumulation_steps for a larger effective batch",
}


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def read_data(path: Path) -> tuple[Any, list[Issue]]:
    """The parsed contents of a .json or .toml file, or None and an Issue saying what is wrong."""
    name = display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Issue("error", name, FILE_KEY, "file not found")]
    except (OSError, UnicodeDecodeError) as e:
        return None, [Issue("error", name, FILE_KEY, f"cannot read the file: {e}")]
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            return None, [Issue("error", name, FILE_KEY, f"not valid TOML: {e}")]
        # TOML has no top-level array: a datasets file holds them under [[datasets]].
        if path.name.startswith("multidatabackend") and isinstance(data, dict) and "datasets" in data:
            data = data["datasets"]
        return data, []
    duplicates: list[tuple[str, Any, Any]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                duplicates.append((k, seen[k], v))
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        return None, [Issue("error", name, FILE_KEY,
                            f"not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}")]
    # JSON readers (and SimpleTuner) keep the later value: so do we, and say so.
    return data, [Issue("warning", name, k, f"appears twice; the later value {new!r} is used (the earlier was "
                        f"{first!r}); keep one") for k, first, new in duplicates]


# --------------------------------------------------------------------------------------------
# Keys and values
# --------------------------------------------------------------------------------------------


def _nearest(key: str, *pools: typing.Iterable[str]) -> str | None:
    """The closest valid name, ignoring case ("BF16" → "bf16"), searching the pools in order."""
    for pool in pools:
        by_lower = {name.lower(): name for name in pool}
        match = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
        if match:
            return by_lower[match[0]]
    return None


def _sort_keys(data: dict[str, Any], model: type[BaseModel], file: str, prefix: str,
               simpletuner: frozenset[str], renamed: dict[str, str],
               dataset_level: set[str] | None = None) -> tuple[dict[str, Any], list[Issue]]:
    """Strip `--`, keep our keys, warn about SimpleTuner-only ones, reject the rest with a suggestion."""
    issues: list[Issue] = []
    clean: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    fields = model.model_fields
    for raw, value in data.items():
        key = raw[2:] if isinstance(raw, str) and raw.startswith("--") else str(raw)
        where = f"{prefix}{key}"
        if key in renamed:
            new = renamed[key]
            issues.append(Issue("warning", file, where, f"old SimpleTuner name; rename it to {new!r}"))
            key, where = new, f"{prefix}{new}"
        if key in spelled:
            # As on SimpleTuner's command line, the later one wins.
            issues.append(Issue("warning", file, where, f"given twice, as {spelled[key]!r} and {raw!r}; the later "
                                f"value {value!r} is used; keep one"))
        spelled[key] = raw
        if key in fields:
            clean[key] = _none_string(fields[key].annotation, value)
        elif dataset_level is not None and key in dataset_level:
            issues.append(Issue("warning", file, where,
                                "not supported in config.json, ignored; set it on each dataset in multidatabackend.json"))
        elif key in simpletuner:
            issues.append(Issue("warning", file, where, f"not supported, ignored: {INSTEAD[key]}" if key in INSTEAD
                                else "not supported, ignored (a SimpleTuner option tuner does not implement)"))
        else:
            near = _nearest(key, fields, simpletuner)
            hint = f"did you mean {near!r}?" if near else "remove it"
            issues.append(Issue("error", file, where, f"unknown key; {hint}"))
    return clean, issues


def _none_string(annotation: Any, value: Any) -> Any:
    """Read "None"/"null" as unset for optional keys, the way SimpleTuner's command line does."""
    if isinstance(value, str) and value.strip().lower() in ("none", "null"):
        choices = field_choices(annotation) or []
        if type(None) in typing.get_args(annotation) and "none" not in choices:
            return None
    return value


def _describe_error(err: dict[str, Any], model: type[BaseModel], value: Any) -> str:
    """Turn one pydantic error into: what was given, what is allowed, what to do."""
    loc = [p for p in err["loc"] if isinstance(p, str)]
    annotation = None
    cls: type[BaseModel] | None = model
    for part in loc:
        if cls is None or part not in cls.model_fields:
            annotation = None
            break
        annotation = cls.model_fields[part].annotation
        cls = VideoConfig if part == "video" else None
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f"got {value!r}"
    if kind == "literal_error":
        choices = [str(c) for c in (field_choices(annotation) or [])]
        near = _nearest(str(value), choices)
        hint = f"; did you mean {near!r}?" if near else ""
        return f"{got}; allowed values: {', '.join(choices)}{hint}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{got}; expected true or false"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{got}; expected a whole number"
    if kind in ("float_parsing", "float_type"):
        return f"{got}; expected a number"
    if kind in ("string_type",):
        return f"{got}; expected text"
    if kind in ("list_type",):
        return f"{got}; expected a list like [7, 8, 9]"
    if kind in ("dict_type", "model_type"):
        return f"{got}; expected an object {{...}}"
    if kind == "missing":
        return "required; add it"
    if kind == "string_too_short":
        return f"{got}; must not be empty"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, name = bounds[kind]
        key = loc[-1] if loc else ""
        hint = f"; {HINTS[key]}" if key in HINTS else ""
        return f"{got}; must be {words} {ctx.get(name)}{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("allowed values: "):  # a closed set known only at run time (the family cards)
        near = _nearest(str(value), msg.removeprefix("allowed values: ").split(", "))
        msg += f"; did you mean {near!r}?" if near else ""
    return f"{got}; {msg}"


def _validate(model: type[BaseModel], data: dict[str, Any], file: str,
              prefix: str) -> tuple[BaseModel | None, list[Issue], set[str]]:
    """Validate; on failure describe every error and return the keys at fault."""
    try:
        return model.model_validate(data), [], set()
    except ValidationError as exc:
        issues, bad = [], set()
        for err in exc.errors():
            loc = err["loc"]
            top = str(loc[0]) if loc else FILE_KEY
            bad.add(top)
            key = ".".join(str(p) for p in loc if isinstance(p, str)) or top
            value = data.get(top)
            if top == "video" and isinstance(value, dict) and len(loc) > 1:
                value = value.get(str(loc[1]))
            issues.append(Issue("error", file, f"{prefix}{key}", _describe_error(err, model, value)))
        return None, issues, bad


def _parse_train(data: Any, file: str) -> tuple[TrainConfig | None, TrainConfig | None, list[Issue]]:
    """(the config or None, a best-effort config for cross-field rules, issues)."""
    if not isinstance(data, dict):
        return None, None, [Issue("error", file, FILE_KEY, "expected a JSON object of {\"key\": value}")]
    clean, issues = _sort_keys(data, TrainConfig, file, "", SIMPLETUNER_OPTIONS, RENAMED, DATASET_LEVEL_KEYS)
    cfg, errors, bad = _validate(TrainConfig, clean, file, "")
    if cfg is not None:
        return cfg, cfg, issues
    partial = TrainConfig.model_validate({k: v for k, v in clean.items() if k not in bad})
    return None, partial, issues + errors


def parse_train_config(data: dict, file: str = "config.json") -> tuple[TrainConfig | None, list[Issue]]:
    """Validate config.json's contents: the model (None on any error) and every issue found."""
    cfg, _partial, issues = _parse_train(data, file)
    return cfg, issues


def _dataset_label(entry: Any, index: int) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{ident}." if isinstance(ident, str) and ident else f"#{index + 1}."


def _parse_datasets(data: Any, file: str) -> tuple[list[DatasetConfig], list[Issue]]:
    """Every dataset that validates (for rules) and the issues of those that do not."""
    if not isinstance(data, list):
        return [], [Issue("error", file, FILE_KEY, "expected a JSON array of datasets [{\"id\": ...}, ...]")]
    datasets, issues = [], []
    for i, entry in enumerate(data):
        prefix = _dataset_label(entry, i)
        if not isinstance(entry, dict):
            issues.append(Issue("error", file, prefix.rstrip("."), "expected an object {\"id\": ..., ...}"))
            continue
        clean, found = _sort_keys(entry, DatasetConfig, file, prefix, SIMPLETUNER_DATASET_KEYS, DATASET_RENAMED)
        issues += found
        if isinstance(clean.get("video"), dict):
            video, found = _sort_keys(clean["video"], VideoConfig, file, f"{prefix}video.",
                                      SIMPLETUNER_VIDEO_KEYS, {})
            clean["video"] = video
            issues += found
        ds, errors, bad = _validate(DatasetConfig, clean, file, prefix)
        issues += errors
        if ds is None and "id" not in bad:
            ds = DatasetConfig.model_validate({k: v for k, v in clean.items() if k not in bad})
        if ds is not None:
            datasets.append(ds)
    return datasets, issues


def parse_datasets(data: list, file: str = "multidatabackend.json") -> tuple[list[DatasetConfig] | None, list[Issue]]:
    """Validate multidatabackend.json's contents: the datasets (None on any error) and every issue."""
    datasets, issues = _parse_datasets(data, file)
    if any(i.level == "error" for i in issues):
        return None, issues
    return datasets, issues


def parse_prompts(data: Any, file: str = "user_prompt_library.json") -> tuple[dict[str, str] | None, list[Issue]]:
    """Validate a prompt library; a nickname unsafe as a file name (SimpleTuner's `anime_<token>`) is
    kept and warned about, and its files get a safe name (nickname_file_name)."""
    if not isinstance(data, dict):
        return None, [Issue("error", file, FILE_KEY, "expected a JSON object {\"nickname\": \"prompt\"}")]
    issues = []
    names: dict[str, str] = {}
    for nick, prompt in data.items():
        text_has_token = isinstance(prompt, str) and TOKEN in prompt
        if not isinstance(prompt, str) or not prompt.strip():
            issues.append(Issue("error", file, nick, f"got {prompt!r}; expected a non-empty prompt text"))
        if not nick.strip():
            issues.append(Issue("error", file, repr(nick), "nickname is empty; it names the validation files"))
            continue
        safe = nickname_file_name(nick)
        problem = _bad_nickname(nick)
        # One line per entry, however many of its parts still hold the quickstarts' placeholder.
        holders = " and ".join(part for part, has in (("nickname", TOKEN in nick), ("prompt", text_has_token)) if has)
        token = (f"{holders} still contain{'s' if ' and ' not in holders else ''} {TOKEN}: replace it with your "
                 "subject's name (or its trigger word)") if holders else ""
        if problem:
            issues.append(Issue("warning", file, nick, (f"{token}; " if token else "") + f"the nickname {problem}, "
                                f"so its validation files are named {safe!r}"))
        elif token:
            issues.append(Issue("warning", file, nick, token))
        if safe in names:
            issues.append(Issue("error", file, nick, f"nickname names the same files ({safe!r}) as "
                                f"{names[safe]!r}; rename one"))
        names.setdefault(safe, nick)
    if any(i.level == "error" for i in issues):
        return None, issues
    return dict(data), issues




def nickname_file_name(nickname: str) -> str:
    """The file-name stem a prompt nickname's validation samples are saved under."""
    stem = re.sub(r"_*[^A-Za-z0-9_.-]+_*", "_", nickname).strip("_")
    return stem if stem.strip(".") else "prompt"


def _bad_nickname(nick: str) -> str | None:
    """Why a nickname cannot be a file name on Linux, macOS and Windows as written, or None if it can."""
    if nick != nick.strip():
        return "starts or ends with a space"
    if nick in (".", ".."):
        return f"{nick!r} is not a file name"
    bad = sorted({c for c in nick if c in '/\\:*?"<>|' or ord(c) < 32})
    if bad:
        return f"contains {' '.join(repr(c) for c in bad)}"
    if len(nick) > 100:
        return "is longer than 100 characters"
    return None


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def _find_config(path: Path) -> tuple[Path | None, list[Issue]]:
    if path.is_dir():
        found = [path / n for n in CONFIG_NAMES if (path / n).is_file()]
        if not found:
            return None, [Issue("error", display(path), FILE_KEY,
                                "no config.json or config.toml in this folder; pass the folder that holds them")]
        issues = []
        if len(found) > 1:
            issues.append(Issue("warning", display(found[1]), FILE_KEY, "config.json is used; this file is ignored"))
        return found[0], issues
    if not path.exists():
        return None, [Issue("error", display(path), FILE_KEY, "not found; pass a config folder or a config.json")]
    return path, []


def _companion(raw: dict[str, Any], key: str, defaults: tuple[str, ...], config_file: Path,
               base_dir: Path, required: bool) -> tuple[Path | None, list[Issue]]:
    """Find the datasets or prompts file: the key's path, else the default name next to the config."""
    value = raw.get(key)
    if isinstance(value, str) and value.strip() and value.strip().lower() not in ("none", "null"):
        path = resolve_path(value, base_dir, config_file.parent)
        if path.is_file():
            return path, []
        beside = config_file.parent / Path(value).name
        hint = (f"; {beside.name} sits next to the config: run from the folder the path is relative to, "
                "or remove the key to use it") if beside.is_file() else \
            f"; fix the path, or remove the key to use {defaults[0]} next to the config"
        return None, [Issue("error", display(config_file), key,
                            f"{value!r} not found (looked in {base_dir} and {config_file.parent}){hint}")]
    for name in defaults:
        if (config_file.parent / name).is_file():
            return config_file.parent / name, []
    if required:
        return None, [Issue("error", display(config_file), key,
                            f"no datasets file: set {key} or put a {defaults[0]} next to the config")]
    return None, []


def check_data(config: Any, datasets: Any, prompts: Any, *, base_dir: str | os.PathLike[str],
               config_path: str | os.PathLike[str], hardware: dict | None = None,
               databackend_path: Path | None = None,
               prompts_path: Path | None = None) -> tuple[ConfigBundle | None, list[Issue]]:
    """Check a config already in memory (the three files' parsed contents); the bundle is None on any error.

    `config_path` is where the config is (or will be) kept: issues name it, and a relative path
    that is not under `base_dir` is looked up beside it. `datasets` None means its file could not
    be read (the reader has said why), so the cross-field rules are skipped; `prompts` None means
    there is no prompt library.
    """
    config_path = Path(config_path).absolute()
    train, partial, issues = _parse_train(config, display(config_path))
    parsed: list[DatasetConfig] = []
    if datasets is not None:
        parsed, found = _parse_datasets(datasets, display(databackend_path or DATABACKEND_NAMES[0]))
        issues += found
    library: dict[str, str] = {}
    if prompts is not None:
        checked, found = parse_prompts(prompts, display(prompts_path or PROMPTS_NAME))
        issues += found
        library = checked or {}
    bundle = ConfigBundle(train=partial or TrainConfig(), datasets=parsed, prompts=library,
                          config_path=config_path, databackend_path=databackend_path and databackend_path.absolute(),
                          prompts_path=prompts_path and prompts_path.absolute(), base_dir=Path(base_dir).absolute())
    # Rules on an unreadable datasets file would only add "no dataset" noise to the real error.
    if partial is not None and datasets is not None:
        issues += run_rules(bundle, hardware)
    bundle.warnings = [i for i in issues if i.level == "warning"]
    ok = train is not None and datasets is not None and not any(i.level == "error" for i in issues)
    return (bundle if ok else None), issues


def _load(path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None,
          hardware: dict | None) -> tuple[ConfigBundle | None, list[Issue]]:
    """Read a config folder's files, then check what they hold; the bundle is None when any error was found."""
    base = Path(base_dir).absolute() if base_dir is not None else Path.cwd()
    config_file, issues = _find_config(Path(path).expanduser())
    if config_file is None:
        return None, issues
    raw, found = read_data(config_file)
    issues += found
    if raw is None:
        return None, issues
    raw_keys = {k[2:] if isinstance(k, str) and k.startswith("--") else k: v
                for k, v in (raw.items() if isinstance(raw, dict) else [])}
    db_path, found = _companion(raw_keys, "data_backend_config", DATABACKEND_NAMES, config_file, base, True)
    issues += found
    datasets = None
    if db_path is not None:
        datasets, found = read_data(db_path)
        issues += found
    prompts_path, found = _companion(raw_keys, "user_prompt_library", (PROMPTS_NAME,), config_file, base, False)
    issues += found
    prompts = None
    if prompts_path is not None:
        prompts, found = read_data(prompts_path)
        issues += found
    read_failed = any(i.level == "error" for i in issues)
    bundle, found = check_data(raw, datasets, prompts, base_dir=base, config_path=config_file, hardware=hardware,
                               databackend_path=db_path, prompts_path=prompts_path)
    issues += found
    if bundle is not None:
        bundle.warnings = [i for i in issues if i.level == "warning"]
    return (None if read_failed else bundle), issues


def load_bundle(path: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None,
                hardware: dict | None = None) -> ConfigBundle:
    """Load a config folder (or config.json/.toml); raise ConfigError listing every error."""
    bundle, issues = _load(path, base_dir, hardware)
    if bundle is None:
        raise ConfigError([i for i in issues if i.level == "error"] + [i for i in issues if i.level == "warning"])
    return bundle


def check_bundle(path: str | os.PathLike[str], *, base_dir: str | os.PathLike[str] | None = None,
                 hardware: dict | None = None) -> list[Issue]:
    """Every error and warning in a config folder, errors first; never raises for config problems."""
    _bundle, issues = _load(path, base_dir, hardware)
    return [i for i in issues if i.level == "error"] + [i for i in issues if i.level == "warning"]


__all__ = ["load_bundle", "check_bundle", "check_data", "parse_train_config", "parse_datasets", "parse_prompts",
           "read_data", "display"]
