"""Captions for an image from its file name, a text file beside it, or the dataset's instance prompt."""
from __future__ import annotations

import re
from pathlib import Path

from tuner.engine.data.errors import DataError

STRATEGIES = ("filename", "textfile", "instanceprompt")

# Markers that copying tools and cameras append: "name (2)", "name - Copy", "name_copy3", "name_0001".
_DUP_MARKERS = (
    re.compile(r"\s*\(\d+\)$"),
    re.compile(r"[\s_-]+copy(?:[\s_-]*\d+)?$", re.IGNORECASE),
    re.compile(r"[\s_-]+\d+$"),
)


def caption_from_filename(path: Path) -> str:
    """The file's stem as a sentence: `_`/`-` become spaces, trailing counters and copy markers go."""
    stem = path.stem
    trimmed = stem
    changed = True
    while changed:
        changed = False
        for pattern in _DUP_MARKERS:
            new = pattern.sub("", trimmed)
            if new != trimmed and new.strip(" _-"):
                trimmed, changed = new, True
    text = re.sub(r"[_\-]+", " ", trimmed)
    return re.sub(r"\s+", " ", text).strip() or stem


def captions_for(path: Path, strategy: str, instance_prompt: str | None, dataset_id: str) -> list[str]:
    """The caption candidates of one image (a text file may hold several, one per line); [] when missing."""
    if strategy == "filename":
        return [caption_from_filename(path)]
    if strategy == "instanceprompt":
        if not instance_prompt:
            raise DataError(f"dataset {dataset_id!r}: caption_strategy 'instanceprompt' needs an "
                            f"'instance_prompt' in multidatabackend.json")
        return [instance_prompt]
    if strategy == "textfile":
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            return []
        lines = [line.strip() for line in txt.read_text(encoding="utf-8", errors="replace").splitlines()]
        return [line for line in lines if line]
    raise DataError(f"dataset {dataset_id!r}: caption_strategy {strategy!r} is not supported; "
                    f"use one of {', '.join(STRATEGIES)}")
