"""What is wrong with a folder the user typed, said before anything is read from or written to it."""
from __future__ import annotations

import tempfile
from pathlib import Path


def short(path: str | Path, limit: int = 80) -> str:
    """A path cut to fit a message (a pasted 10 000-character one would fill the screen)."""
    text = str(path)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_dir(path: str | Path) -> bool:
    """Whether the path is a folder; a path the system refuses (too long, unreadable) is not."""
    try:
        return Path(path).expanduser().is_dir()
    except OSError:
        return False


def exists(path: str | Path) -> bool:
    """Whether anything is at the path; a path the system refuses (too long, unreadable) holds nothing."""
    try:
        return Path(path).expanduser().exists()
    except OSError:
        return False


def folder_to_read(text: str) -> str | None:
    """Why `text` is not a folder that can be read, or None when it is."""
    if not text.strip():
        return "choose a folder"
    path = Path(text.strip()).expanduser()
    try:
        if not path.exists():
            return f"{short(path)} does not exist"
        if not path.is_dir():
            return f"{short(path)} is a file, not a folder"
        next(path.iterdir(), None)
    except OSError as e:
        return f"{short(path)} cannot be read: {e.strerror or e}"
    return None


def folder_to_write(text: str) -> str | None:
    """Why `text` is not a folder that exists or can be made, and written, or None when it is.

    The nearest folder that exists is tried by making (and removing) an empty folder in it:
    permission bits do not tell (root, read-only mounts, /proc).
    """
    if not text.strip():
        return "choose a folder"
    path = Path(text.strip()).expanduser().absolute()
    try:
        probe = path
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            return f"{short(probe)} is a file, not a folder"
        with tempfile.TemporaryDirectory(dir=probe, prefix=".tuner-write-test-"):
            pass
    except OSError as e:
        where = f" ({short(e.filename)})" if e.filename else ""
        return f"cannot be made or written here: {e.strerror or e}{where}; choose another folder"
    return None
