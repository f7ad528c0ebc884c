"""Finding a dataset's image files on disk."""
from __future__ import annotations

import os
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp"})


def find_images(folder: Path) -> list[Path]:
    """Every image under `folder` (recursive, sorted, hidden files and folders skipped)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        # Hidden folders hold editor / OS clutter (.thumbnails, .git), never training data.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return sorted(found)
