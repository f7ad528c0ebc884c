"""Findings about config files: an Issue names the file, the key and what to do; ConfigError carries them all."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FILE_KEY = "(file)"


@dataclass
class Issue:
    """One finding about a config file: an error stops the run, a warning does not."""

    level: Literal["error", "warning"]
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"


class ConfigError(Exception):
    """Every error found in a config folder, reported together."""

    def __init__(self, issues: list[Issue]):
        self.issues = list(issues)
        errors = [i for i in self.issues if i.level == "error"]
        head = f"{len(errors)} error{'s' if len(errors) != 1 else ''} in the config"
        super().__init__("\n".join([head + ":"] + [f"  {i}" for i in self.issues]))


def display(path: Path | str) -> str:
    """A path as the user wants to read it: relative to the working dir when it lies inside."""
    p = Path(path)
    try:
        return str(p.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(p)
