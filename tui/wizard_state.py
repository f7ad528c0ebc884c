"""What the wizard has gathered so far, and the three config files it turns into; torch-free."""
from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.engine import families
from tuner.engine.config import Issue, check_bundle, load_bundle
from tuner.engine.families import TRAINING_KEYS, TRAINING_LABELS
FILE_NAMES = ("config.json", "multidatabackend.json", "user_prompt_library.json")
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
    planned: bool = False
    config_folder: str = ""
    detected: dict[str, Any] | None = None   # the probe's result, kept while a planned machine is shown

    def __post_init__(self) -> None:
        if self.detected is None and self.hardware is not None and self.hardware.get("platform") != "planned":
            self.detected = self.hardware

    @property
    def family(self) -> str:
        return self.config.get("model_family", "sana")

    def set_training(self, kind: str) -> None:
        """Set the config keys for a training type, dropping adapter keys a full fine-tune ignores."""
        self.config.update(TRAINING_KEYS[kind])
        if kind == "full":
            self.config.pop("lora_type", None)

    def pixel_datasets(self) -> list[dict[str, Any]]:
        return [d for d in self.datasets if d.get("dataset_type", "image") != "text_embeds"]

    def files(self) -> dict[str, str]:
        """The exact text of the three files the review shows and writes."""
        output = Path(self.config.get("output_dir") or "output").expanduser()
        config = {k: v for k, v in self.config.items() if v is not None and v != ""}
        # The companions sit next to config.json, so the folder runs from anywhere without these keys.
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
        texts = [config, datasets, dict(self.prompts)]
        return {name: json.dumps(data, indent=2) + "\n" for name, data in zip(FILE_NAMES, texts)}

    def check(self) -> list[Issue]:
        """check_bundle's verdict on exactly these files (written to a scratch folder first)."""
        with tempfile.TemporaryDirectory(prefix="tuner-review-") as scratch:
            write_files(self.files(), Path(scratch))
            issues = check_bundle(scratch, hardware=None if self.planned or not self.hardware else self.hardware)
        # The scratch folder's name means nothing to the user; name the files plainly.
        for issue in issues:
            issue.file = Path(issue.file).name
        return issues


def write_files(files: dict[str, str], folder: Path) -> list[Path]:
    """Write the review's texts byte for byte into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = folder / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written


def from_folder(folder: str | Path, hardware: dict[str, Any]) -> WizardState:
    """A wizard state from an existing config folder (tuner's or SimpleTuner's); raises ConfigError."""
    bundle = load_bundle(folder)
    config = bundle.train.model_dump(mode="json", exclude_unset=True)
    for key in ("data_backend_config", "user_prompt_library"):
        config.pop(key, None)
    if config.get("output_dir"):
        config["output_dir"] = str(bundle.resolve(config["output_dir"]))
    model = config.get("pretrained_model_name_or_path")
    if model and bundle.resolve(model).exists():   # a local folder; a hub id stays as written
        config["pretrained_model_name_or_path"] = str(bundle.resolve(model))
    config.setdefault("model_family", bundle.train.model_family)
    config.setdefault("pretrained_model_name_or_path", bundle.train.base_model())
    config.setdefault("output_dir", str(bundle.resolve(bundle.train.output_dir)))
    datasets = []
    for ds in bundle.datasets:
        entry = ds.model_dump(mode="json", exclude_unset=True)
        for key in ("instance_data_dir", "cache_dir_vae", "cache_dir"):
            if entry.get(key):
                entry[key] = str(bundle.resolve(entry[key]))
        datasets.append(entry)
    if not any(d.get("dataset_type", "image") != "text_embeds" for d in datasets):
        datasets.insert(0, new_dataset())
    return WizardState(hardware=hardware, config=config, datasets=datasets,
                       prompts=copy.deepcopy(bundle.prompts), config_folder=str(Path(folder).absolute()))
