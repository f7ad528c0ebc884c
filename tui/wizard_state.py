"""What the wizard has gathered so far, checked in memory; torch-free.

The review shows the values as entered; what it writes, and what tunerd then runs, is
job_files' output for the checked values (tuner.engine.config.jobfiles).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.engine import families
from tuner.engine.config import (
    ConfigBundle, ConfigError, DatasetConfig, Issue, TrainConfig, check_data, display, resolve_path,
)
from tuner.engine.config.as_written import (
    datasets_in_user_spelling, in_user_spelling, read_as_written, typed, user_key,
)
from tuner.engine.config.io import DATASET_RENAMED, RENAMED
from tuner.engine.config.issues import FILE_KEY
from tuner.engine.config.jobfiles import DATASET_PATH_KEYS, FILE_NAMES, MODEL_KEYS, TRAIN_PATH_KEYS
from tuner.engine.families import TRAINING_KEYS, TRAINING_LABELS
from tuner.engine.jobdir import CONFIG, DATABACKEND, PROMPT_LIBRARY
from tuner.presets import apply_preset

TEXT_EMBEDS_ID = "text-embeds"


def training_type(config: dict[str, Any]) -> str:
    """The wizard's training type ('full', 'lora', 'lokr') that a config's keys describe."""
    if config.get("model_type", "full") == "full":
        return "full"
    return "lokr" if config.get("lora_type") == "lycoris" else "lora"


def training_types(family: str) -> list[tuple[str, str]]:
    """The training types a family's card allows, as (key, label), the default first."""
    return [(key, TRAINING_LABELS[key]) for key in families.card(family).training_types]


def new_dataset(index: int = 0) -> dict[str, Any]:
    """A fresh image dataset entry with the wizard's defaults."""
    return {"id": f"dataset-{index + 1}" if index else "dataset", "type": "local", "dataset_type": "image",
            "instance_data_dir": "", "caption_strategy": "textfile", "crop": True, "crop_aspect": "square",
            "crop_style": "center", "repeats": 0}


def _entered(model: type, key: str, value: Any) -> bool:
    """Whether a value is set: an emptied field is not, unless "" is what the key holds by default (a user's
    file may say so); a key tuner does not read keeps what the user's file holds."""
    if key not in model.model_fields:
        return True
    return value is not None and (value != "" or model.model_fields[key].default == "")


@dataclass
class WizardState:
    """Everything entered so far; steps read their fields from here and write them back on leaving."""

    hardware: dict[str, Any] | None
    config: dict[str, Any] = field(default_factory=lambda: {
        "model_family": "sana", "model_type": "full",
        "pretrained_model_name_or_path": families.card("sana").default_model, "output_dir": str(Path.cwd() / "output")})
    datasets: list[dict[str, Any]] = field(default_factory=lambda: [new_dataset()])
    prompts: dict[str, str] = field(default_factory=dict)
    preset: str | None = None
    preset_keys: dict[str, Any] = field(default_factory=dict)   # what the taken preset set, to undo on a switch
    preset_dataset_keys: dict[str, Any] = field(default_factory=dict)
    preset_declined: bool = False   # "no preset" was chosen (so the step shows that row again)
    planned: bool = False
    config_folder: str = ""
    detected: dict[str, Any] | None = None   # the probe's result, kept while a planned machine is shown
    found: list[Issue] = field(default_factory=list)   # an opened folder's problems, until a step re-checks them
    original: dict[str, Any] | None = None   # an opened folder's config and datasets as the user wrote them
    respelled: dict[str, str] = field(default_factory=dict)   # config keys the user renamed on Review: old → new
    write_to: str = ""   # the folder typed on Review for the config files, kept when going back and forth
    started: str = field(default="", repr=False)   # snapshot() when the wizard opened

    def __post_init__(self) -> None:
        if self.detected is None and self.hardware is not None and self.hardware.get("platform") != "planned":
            self.detected = self.hardware
        self.started = self.snapshot()

    def snapshot(self) -> str:
        """What the user has entered, as text: equal snapshots mean nothing was entered in between."""
        return json.dumps([self.config, self.datasets, self.prompts, self.preset, self.planned,
                           self.hardware if self.planned else None, self.respelled, self.write_to],
                          sort_keys=True, default=str)

    @property
    def changed(self) -> bool:
        """Whether anything was entered since the wizard opened (leaving would lose it)."""
        return self.snapshot() != self.started

    @property
    def family(self) -> str:
        return self.config.get("model_family", "sana")

    def edits_a_preset_resets(self, preset: Any) -> list[str]:
        """The config keys (and "<dataset id>.key" dataset keys) the user set that taking `preset` would
        change: values that are neither the previous preset's nor the wizard's defaults."""
        own = {"model_family", "model_type", "lora_type", "pretrained_model_name_or_path"}   # earlier steps'
        fresh = WizardState(hardware=None)
        edited = [key for key, value in preset.config.items()
                  if key not in own and key in self.config and self.config[key] != value
                  and self.preset_keys.get(key, fresh.config.get(key)) != self.config[key]]
        default = new_dataset()
        for ds in self.pixel_datasets():
            edited += [f"{ds['id']}.{key}" for key, value in preset.dataset.items()
                       if key != "video" and key in ds and ds[key] != value
                       and self.preset_dataset_keys.get(key, default.get(key)) != ds[key]]
        return edited

    def chose_model(self) -> bool:
        """Whether the model is the user's own choice (a local folder, an id no card publishes), not a default."""
        model = self.config.get("pretrained_model_name_or_path")
        return bool(model) and model not in {size.model_id for card in families.cards() for size in card.sizes}

    def take_preset(self, preset: Any, keep: list[str] = ()) -> None:
        """Lay a preset over the config: the previous preset's keys go first (unless the user changed
        them since), and a model the user chose (a local folder, an id no card publishes) stays, as do
        the edits named in `keep` (keys as edits_a_preset_resets names them)."""
        kept = {key: copy.deepcopy(self.config[key]) for key in keep if key in self.config}
        kept_ds = {key: copy.deepcopy(ds[name]) for ds in self.pixel_datasets()
                   for key in keep if key.partition(".")[0] == ds["id"] and (name := key.partition(".")[2]) in ds}
        for key, value in self.preset_keys.items():
            if self.config.get(key) == value:
                self.config.pop(key)
        for ds in self.pixel_datasets():
            for key, value in self.preset_dataset_keys.items():
                if ds.get(key) == value:
                    ds.pop(key)
        model = self.config.get("pretrained_model_name_or_path")
        chosen = self.chose_model()
        config, datasets = apply_preset(preset, self.config, self.datasets)
        if chosen:
            config["pretrained_model_name_or_path"] = model
        self.preset_keys = {k: v for k, v in preset.config.items() if config.get(k) == v}
        self.preset_dataset_keys = {k: v for k, v in preset.dataset.items() if k != "video"}
        config.update(kept)
        for ds in datasets:
            for key, value in kept_ds.items():
                if key.partition(".")[0] == ds.get("id"):
                    ds[key.partition(".")[2]] = value
        self.preset_keys = {k: v for k, v in self.preset_keys.items() if k not in kept}
        self.config, self.datasets, self.preset = config, datasets, preset.name
        self.preset_declined = False

    def set_training(self, kind: str) -> None:
        """Set the config keys for a training type, dropping adapter keys a full fine-tune ignores."""
        self.config.update(TRAINING_KEYS[kind])
        if kind == "full":
            self.config.pop("lora_type", None)

    def processes(self) -> int:
        """How many training processes share a batch: one per GPU (one on the CPU)."""
        return len((self.hardware or {}).get("gpus") or []) or 1

    def pixel_datasets(self) -> list[dict[str, Any]]:
        return [d for d in self.datasets if d.get("dataset_type", "image") != "text_embeds"]

    def data(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        """The three files' contents as entered, with the wizard's defaults (caches, a text-embed dataset)."""
        output = Path(self.config.get("output_dir") or "output").expanduser()
        config = {k: v for k, v in self.config.items() if _entered(TrainConfig, k, v)}
        # The companions are the files beside config.json; job_files names them when writing.
        for key in ("data_backend_config", "user_prompt_library"):
            config.pop(key, None)
        datasets = []
        for ds in self.pixel_datasets():
            entry = {k: v for k, v in ds.items() if _entered(DatasetConfig, k, v)}
            entry.setdefault("cache_dir_vae", str(output / "cache" / "vae" / entry["id"]))
            datasets.append(entry)
        embeds = [d for d in self.datasets if d.get("dataset_type") == "text_embeds"]
        datasets += embeds or [{"id": TEXT_EMBEDS_ID, "type": "local", "dataset_type": "text_embeds",
                                "default": True, "cache_dir": str(output / "cache" / "text")}]
        return config, datasets, dict(self.prompts)

    def files(self) -> dict[str, str]:
        """The values as entered, one JSON text per file: what the review shows."""
        return {name: json.dumps(data, indent=2) + "\n" for name, data in zip(FILE_NAMES, self.data())}

    def in_user_spelling(self, files: dict[str, Any]) -> dict[str, Any]:
        """job_files' contents for an opened folder in the user's own spelling (`--` keys, their text for values
        that did not change, the SimpleTuner options tuner ignores); a new config's are returned as they are."""
        if self.original is None:
            return files
        config, datasets, _prompts = self.data()
        kept = {k: v for k, v in config.items() if k not in TrainConfig.model_fields}
        kept_datasets = [{k: v for k, v in d.items() if k not in DatasetConfig.model_fields} for d in datasets]
        original = self.original.get(CONFIG)
        return {**files,
                CONFIG: in_user_spelling(files[CONFIG], kept, original if isinstance(original, dict) else {},
                                         TrainConfig, RENAMED, self.respelled),
                DATABACKEND: datasets_in_user_spelling(files[DATABACKEND], kept_datasets, self.original.get(DATABACKEND),
                                                       DatasetConfig, DATASET_RENAMED)}

    def check(self) -> tuple[ConfigBundle | None, list[Issue]]:
        """The engine's check of these values, in memory (errors first); the bundle is None on any error.

        A relative path typed into the wizard is read from the folder tuner-tui runs in; the
        issues name the plain file names, since the files are not written yet.
        """
        config, datasets, prompts = self.data()
        here = Path.cwd()
        try:
            bundle, issues = check_data(config, datasets, prompts, base_dir=here, config_path=here / CONFIG,
                                        hardware=None if self.planned or not self.hardware else self.hardware)
        except OSError as e:   # a path the system refuses to look at (a name too long, a folder it cannot read)
            name = str(e.filename or "")
            return None, [Issue("error", CONFIG, FILE_KEY, f"cannot look at {name[:80] + '…' if len(name) > 80 else name}: "
                                f"{e.strerror or e}; fix that path")]
        for issue in issues:
            issue.file = Path(issue.file).name
        return bundle, [i for i in issues if i.level == "error"] + [i for i in issues if i.level == "warning"]


def from_folder(folder: str | Path, hardware: dict[str, Any]) -> WizardState:
    """A wizard state from an existing config folder (tuner's or SimpleTuner's), problems and all.

    Each problem the engine finds is kept in `found`, for the step whose field fixes it. The values
    are the user's, typed where they are valid and as written where not (a field then shows them with
    their message); paths are made absolute as job_files does. Raises ConfigError only when there is
    nothing to open: no config file, or one that is not a JSON or TOML object.
    """
    written = read_as_written(folder)
    if not isinstance(written.config, dict):
        raise ConfigError(written.issues or [Issue("error", str(folder), FILE_KEY, "expected a JSON object")])
    config_path = written.config_path
    here = Path.cwd()
    _bundle, issues = check_data(written.config, written.datasets, written.prompts, base_dir=here,
                                 config_path=config_path, databackend_path=written.databackend_path,
                                 prompts_path=written.prompts_path)

    def resolve(value: Any) -> str:
        return str(resolve_path(str(value), here, config_path.parent))

    config = _as_entered(written.config, TrainConfig, RENAMED)
    for key in ("data_backend_config", "user_prompt_library"):
        config.pop(key, None)
    for key in TRAIN_PATH_KEYS:
        if isinstance(config.get(key), str) and config[key].strip():
            config[key] = resolve(config[key])
    resume = config.get("resume_from_checkpoint")
    if isinstance(resume, str) and resume.strip() and resume != "latest":
        config["resume_from_checkpoint"] = resolve(resume)
    for key in MODEL_KEYS:
        value = config.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute() and Path(resolve(value)).exists():
            config[key] = resolve(value)
    config.setdefault("model_family", TrainConfig.model_fields["model_family"].default)
    family = config["model_family"] if config["model_family"] in {c.name for c in families.cards()} else None
    if family:
        config.setdefault("pretrained_model_name_or_path", families.card(family).default_model)
    config.setdefault("output_dir", resolve(TrainConfig.model_fields["output_dir"].default))
    datasets = []
    for entry in written.datasets if isinstance(written.datasets, list) else []:
        if isinstance(entry, dict):
            entry = _as_entered(entry, DatasetConfig, DATASET_RENAMED)
            for key in DATASET_PATH_KEYS:
                if isinstance(entry.get(key), str) and entry[key].strip():
                    entry[key] = resolve(entry[key])
            datasets.append(entry)
    if not any(d.get("dataset_type", "image") != "text_embeds" for d in datasets):
        datasets.insert(0, new_dataset())
    prompts = copy.deepcopy(written.prompts) if isinstance(written.prompts, dict) else {}
    where = config_path.parent if Path(folder).is_file() else Path(folder)
    # Issues name the files as the user's folder does; the steps know them by role.
    roles = {display(config_path): CONFIG}
    if written.databackend_path is not None:
        roles[display(written.databackend_path)] = DATABACKEND
    if written.prompts_path is not None:
        roles[display(written.prompts_path)] = PROMPT_LIBRARY
    found = [Issue(i.level, roles.get(i.file, i.file), i.key, i.message) for i in written.issues + issues]
    return WizardState(hardware=hardware, config=config, datasets=datasets, prompts=prompts,
                       config_folder=str(where.absolute()), found=found,
                       original={CONFIG: written.config, DATABACKEND: written.datasets})


def _as_entered(raw: dict[str, Any], model: type, renamed: dict[str, str]) -> dict[str, Any]:
    """A file's keys without `--` and old names, each value typed where the model accepts it, else as written."""
    entered: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = user_key(raw_key)
        key = renamed.get(key, key)
        if key in model.model_fields:
            ok, value_typed = typed(model, key, value)
            value = value_typed if ok else value
        entered[key] = value
    return entered
