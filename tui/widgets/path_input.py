"""A path Input that completes folder names as you type (→ or End accepts the suggestion)."""
from __future__ import annotations

import os
from pathlib import Path

from textual.suggester import Suggester
from textual.widgets import Input


class FolderSuggester(Suggester):
    """Suggests the first folder whose name starts with what was typed after the last '/'."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        path = Path(value).expanduser()
        parent, stem = (path, "") if value.endswith(os.sep) else (path.parent, path.name)
        try:
            names = sorted(e.name for e in os.scandir(parent) if e.is_dir() and not e.name.startswith("."))
        except OSError:
            return None  # a half-typed or unreadable folder simply has no suggestion
        match = next((n for n in names if n.startswith(stem) and n != stem), None)
        if match is None:
            return None
        head = value if value.endswith(os.sep) else value[: len(value) - len(stem)]
        return head + match + os.sep


class PathInput(Input):
    """An Input for folders, with completion."""

    def __init__(self, value: str = "", **kwargs):
        kwargs.setdefault("compact", True)
        kwargs.setdefault("placeholder", "a folder (type a path; → accepts the completion)")
        super().__init__(value, suggester=FolderSuggester(), **kwargs)
