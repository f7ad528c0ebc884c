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
from tuner.engine.config import ConfigBundle, Issue, check_data, job_files, load_bundle
from tuner.engine.config.issues import FILE_KEY
from tuner.engine.config.jobfiles import FILE_NAMES
from tuner.engine.families import TRAINING_KEYS, TRAINING_LABELS
from tuner.engine.jobdir import CONFIG, DATABACKEND
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
    planned: bool = False
    config_folder: str = ""
    detected: dict[str, Any] | None = None   # the probe's result, kept while a planned machine is shown

    def __post_init__(self) -> None:
        if self.detected is None and self.hardware is not None and self.hardware.get("platform") != "planned":
            self.detected = self.hardware

    @property
    def family(self) -> str:
        return self.config.get("model_family", "sana")

    def take_preset(self, preset: Any) -> None:
        """Lay a preset over the config: the previous preset's keys go first (unless the user changed
        them since), and a model the user chose (a local folder, an id no card publishes) stays."""
        for key, value in self.preset_keys.items():
            if self.config.get(key) == value:
                self.config.pop(key)
        for ds in self.pixel_datasets():
            for key, value in self.preset_dataset_keys.items():
                if ds.get(key) == value:
                    ds.pop(key)
        model = self.config.get("pretrained_model_name_or_path")
        published = {size.model_id for card in families.cards() for size in card.sizes}
        config, datasets = apply_preset(preset, self.config, self.datasets)
        if model and model not in published:
            config["pretrained_model_name_or_path"] = model
        self.preset_keys = {k: v for k, v in preset.config.items() if config.get(k) == v}
        self.preset_dataset_keys = {k: v for k, v in preset.dataset.items() if k != "video"}
        self.config, self.datasets, self.preset = config, datasets, preset.name

    def set_training(self, kind: str) -> None:
        """Set the config keys for a training type, dropping adapter keys a full fine-tune ignores."""
        self.config.update(TRAINING_KEYS[kind])
        if kind == "full":
            self.config.pop("lora_type", None)

    def pixel_datasets(self) -> list[dict[str, Any]]:
        return [d for d in self.datasets if d.get("dataset_type", "image") != "text_embeds"]

    def data(self) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
        """The three files' contents as entered, with the wizard's defaults (caches, a text-embed dataset)."""
        output = Path(self.config.get("output_dir") or "output").expanduser()
        config = {k: v for k, v in self.config.items() if v is not None and v != ""}
        # The companions are the files beside config.json; job_files names them when writing.
        for key in ("data_backend_config", "user_prompt_library"):
            config.pop(key, None)
        datasets = []
        for ds in self.pixel_datasets():
            entry = {k: v for k, v in ds.items() if v is not None and v != ""}
            entry.setdefault("cache_dir_vae", str(output / "cache" / "vae" / entry["id"]))
            datasets.append(entry)
        embeds = [d for d in self.datasets if d.get("dataset_type") == "text_embeds"]
        datasets += embeds or [{"id": TEXT_EMBEDS_ID, "type": "local", "dataset_type": "text_embeds",
                                "default": True, "cache_dir": str(output / "cache" / "text")}]
        return config, datasets, dict(self.prompts)

    def files(self) -> dict[str, str]:
        """The values as entered, one JSON text per file: what the review shows."""
        return {name: json.dumps(data, indent=2) + "\n" for name, data in zip(FILE_NAMES, self.data())}

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
    """A wizard state from an existing config folder (tuner's or SimpleTuner's); raises ConfigError."""
    bundle = load_bundle(folder)
    # The values as a job would hold them: the keys the user set, their paths made absolute.
    files = job_files(bundle, folder)
    config = files[CONFIG]
    for key in ("data_backend_config", "user_prompt_library"):
        config.pop(key, None)
    config.setdefault("model_family", bundle.train.model_family)
    config.setdefault("pretrained_model_name_or_path", bundle.train.base_model())
    config.setdefault("output_dir", str(bundle.resolve(bundle.train.output_dir)))
    datasets = files[DATABACKEND]
    if not any(d.get("dataset_type", "image") != "text_embeds" for d in datasets):
        datasets.insert(0, new_dataset())
    return WizardState(hardware=hardware, config=config, datasets=datasets,
                       prompts=copy.deepcopy(bundle.prompts), config_folder=str(Path(folder).absolute()))
