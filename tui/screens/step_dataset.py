"""Wizard step 4: the dataset folders and how they are read, with a live scan that warns early."""
from __future__ import annotations

import json
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Label, Select, Switch

from tuner.engine import families
from tuner.engine.config import DatasetConfig, VideoConfig, parse_datasets
from tuner.engine.jobdir import DATABACKEND
from tuner.tui.screens.step import Problem, StepScreen
from tuner.tui.widgets.config_form import ConfigField, form_values, own_problems
from tuner.tui.widgets.field_row import FieldRow
from tuner.tui.widgets.path_input import PathInput
from tuner.tui.widgets.scan_panel import ScanPanel
from tuner.tui.wizard_state import new_dataset

KEYS = ("id", "caption_strategy", "instance_prompt", "resolution", "crop", "crop_aspect", "crop_style",
        "repeats", "is_regularisation_data")
VIDEO_KEYS = ("num_frames", "min_frames", "max_frames")
FOLDER_LABEL = "Folder (Ctrl+F browses)"
LABELS = {"id": "name (id)", "caption_strategy": "captions from", "instance_prompt": "instance prompt",
          "resolution": "resolution", "crop": "crop", "crop_aspect": "crop aspect", "crop_style": "crop position",
          "repeats": "repeats", "is_regularisation_data": "regularisation data", "num_frames": "video frames",
          "min_frames": "video min. frames", "max_frames": "video max. frames"}


class DatasetStep(StepScreen):
    """One dataset at a time (Ctrl+A adds one, Ctrl+O shows the next); the scan runs as you type."""

    INDEX = 3
    BINDINGS = [
        Binding("ctrl+f", "pick_folder", "Browse", priority=True),
        Binding("ctrl+r", "fix_repeats", "Fix repeats", priority=True),
        Binding("ctrl+a", "add", "Add dataset", priority=True),
        Binding("ctrl+o", "other", "Next dataset", priority=True),
        Binding("ctrl+k", "drop_unknown", "Remove unknown keys", priority=True),
    ]

    FILE = DATABACKEND

    @classmethod
    def labels(cls) -> dict[str, str]:
        return {"instance_data_dir": FOLDER_LABEL, **{key: LABELS[key] for key in KEYS + VIDEO_KEYS}}

    def field_key(self, issue) -> str | None:
        # The datasets file's issues are keyed "<id>.<key>" (or "#<n>.<key>" for an entry without an id).
        if issue.file != DATABACKEND:
            return None
        owner, _, rest = issue.key.partition(".")
        mine = {str(self.dataset.get("id")), f"#{self.state.datasets.index(self.dataset) + 1}"}
        key = rest.rsplit(".", 1)[-1]
        return key if owner in mine and key in self.labels() else None

    def __init__(self, state):
        super().__init__(state)
        self.current = 0
        self.report = None
        self.report_key = ""
        self._timer = None

    @property
    def dataset(self) -> dict[str, Any]:
        return self.state.pixel_datasets()[self.current]

    def body(self) -> ComposeResult:
        ds = self.dataset
        count = len(self.state.pixel_datasets())
        yield Label(f"Dataset {self.current + 1} of {count}", classes="help")
        yield FieldRow("instance_data_dir", FOLDER_LABEL,
                       PathInput(str(ds.get("instance_data_dir") or ""), id="folder"))
        for key in KEYS:
            yield ConfigField(DatasetConfig, key, ds.get(key), label=LABELS[key])
        if families.card(self.state.family).video:
            video = ds.get("video") or {}
            for key in VIDEO_KEYS:
                yield ConfigField(VideoConfig, key, video.get(key), label=LABELS[key])
        yield ScanPanel(id="scan")

    def on_mount(self) -> None:
        super().on_mount()
        self.rescan()

    def entry(self) -> dict[str, Any]:
        """The dataset as the form says it now."""
        values = form_values(self)
        video = {k: values.pop(k) for k in VIDEO_KEYS if k in values}
        out = {**self.dataset, "instance_data_dir": self.query_one("#folder", PathInput).value.strip()}
        for key, value in values.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = value
        if families.card(self.state.family).video:
            out["dataset_type"] = "video"
            out["video"] = {k: v for k, v in video.items() if v is not None}
        return out

    def rescan(self) -> None:
        entry = self.entry()
        self.report_key = json.dumps([entry, self._batch_keys()], sort_keys=True, default=str)
        self.query_one(ScanPanel).scan(self._typed(entry), {**self.state.config}, self.state.processes(),
                                       self.report_key)

    def _batch_keys(self) -> list:
        return [self.state.config.get(k) for k in ("train_batch_size", "gradient_accumulation_steps", "resolution")]

    def _typed(self, entry: dict[str, Any]) -> dict[str, Any]:
        parsed, _ = parse_datasets([entry])
        return parsed[0].model_dump(mode="json") if parsed else entry

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Switch.Changed)
    def changed(self) -> None:
        # Typing a path fires per key; scan once the user pauses. The fields' first values (on mount)
        # are what the scan already has.
        if self._timer is not None:
            self._timer.stop()
        if json.dumps([self.entry(), self._batch_keys()], sort_keys=True, default=str) != self.report_key:
            self._timer = self.set_timer(0.4, self.rescan)

    @on(ScanPanel.Scanned)
    def scanned(self, message: ScanPanel.Scanned) -> None:
        if message.key == self.report_key:
            self.report = message.report
            self.refresh_bindings()

    def unknown_keys(self) -> list[list[str]]:
        """The current dataset's keys tuner does not know (no field can fix them), as paths into the entry."""
        _, issues = parse_datasets([self.entry()])
        return [i.key.split(".")[1:] for i in issues if i.level == "error" and i.message.startswith("unknown key")]

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The footer offers what applies now, so it fits 80 columns.
        if action == "drop_unknown":
            return bool(self.is_mounted and self.query(FieldRow) and self.unknown_keys())
        if action == "fix_repeats":
            return self.report is not None and self.report.suggested_repeats is not None
        if action == "other":
            return len(self.state.pixel_datasets()) > 1
        return True

    def action_drop_unknown(self) -> None:
        entry = self.entry()
        dropped = []
        for path in self.unknown_keys():
            holder = entry.get("video") if len(path) == 2 and isinstance(entry.get("video"), dict) else entry
            holder.pop(path[-1], None)
            dropped.append(".".join(path))
        index = self.state.datasets.index(self.dataset)
        self.state.datasets[index] = entry
        self.notify(f"removed {', '.join(dropped)}" if dropped else "no unknown keys")
        self.refresh_bindings()
        self.show_problems(self.save())

    def action_fix_repeats(self) -> None:
        if self.report is not None and self.report.suggested_repeats is not None:
            self.query_one("#in-repeats", Input).value = str(self.report.suggested_repeats)

    def action_pick_folder(self) -> None:
        from tuner.tui.screens.open_folder import OpenFolder

        def chosen(path: str | None) -> None:
            if path:
                self.query_one("#folder", PathInput).value = path

        self.app.push_screen(OpenFolder("Choose the dataset folder", self.query_one("#folder", PathInput).value),
                             chosen)

    def _store(self) -> None:
        index = self.state.datasets.index(self.dataset)
        self.state.datasets[index] = self.entry()

    def action_add(self) -> None:
        self._store()
        self.state.datasets.insert(len(self.state.pixel_datasets()), new_dataset(len(self.state.pixel_datasets())))
        self.current = len(self.state.pixel_datasets()) - 1
        self.refresh(recompose=True)
        self.call_after_refresh(self.rescan)

    def action_other(self) -> None:
        self._store()
        self.current = (self.current + 1) % len(self.state.pixel_datasets())
        self.refresh(recompose=True)
        self.call_after_refresh(self.rescan)

    def save(self) -> list[Problem]:
        entry = self.entry()
        key = json.dumps([entry, self._batch_keys()], sort_keys=True, default=str)
        parsed, issues = parse_datasets([entry])
        # The issue's key is "<id>.<key>" or "<id>.video.<key>": the field is the last part.
        problems = [Problem(i.key.rsplit(".", 1)[-1], i.message) for i in issues if i.level == "error"]
        problems += [Problem(k, message) for k, message in own_problems(self).items()]
        if not problems:
            # Typed values, and the keys tuner does not read kept as they were (written back as the user had them).
            loose = {k: v for k, v in entry.items() if k not in DatasetConfig.model_fields}
            entry = {**loose, **parsed[0].model_dump(mode="json", exclude_unset=True)}
        index = self.state.datasets.index(self.dataset)
        self.state.datasets[index] = entry
        if problems:
            return problems
        ids = [d.get("id") for d in self.state.datasets]
        if len(set(ids)) != len(ids):
            return [Problem("id", f"{entry['id']!r} is used by another dataset; give each its own")]
        if self.report is None or self.report_key != key:
            self.rescan()
            return [Problem("", "the scan is still running; press Ctrl+N again when it shows its result")]
        if self.report.folder_problem:
            return [Problem("instance_data_dir", self.report.folder_problem)]
        return [Problem("", f"scan: {e}") for e in self.report.errors]
