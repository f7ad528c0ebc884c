"""Which checkpoints in an output folder are whole: the manifest each one carries, and its check.

A checkpoint's marker (`checkpoint.json`, written last) lists every file with its size and
SHA-256. A machine that crashed, or a copy that stopped half way, leaves files that are short or
different; such a checkpoint is reported and skipped, never deleted. Checkpoints from before the
manifest are checked by their safetensors headers: each file must be as long as its header says.
Torch-free, so `tuner check` and the daemon can read it.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

MARKER = "checkpoint.json"
FORMAT = 2  # 1: marker without a manifest
_NAME = re.compile(r"^checkpoint-(\d+)$")
_CHUNK = 8 << 20


@dataclass(frozen=True)
class CheckpointState:
    """One checkpoint folder and whether it can be resumed from."""

    step: int
    path: Path
    problem: str | None = None      # None: whole

    @property
    def ok(self) -> bool:
        return self.problem is None


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(folder: Path) -> dict[str, dict[str, int | str]]:
    """Every file in a checkpoint folder but the marker (those of its subfolders too, by relative
    path: an FSDP checkpoint's `sharded/`): its size and SHA-256."""
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_digest(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).as_posix() != MARKER}


def complete(output_dir: Path) -> list[tuple[int, Path]]:
    """Checkpoints whose marker was written (the save finished), as (step, path), oldest first."""
    found = []
    if output_dir.is_dir():
        for entry in output_dir.iterdir():
            m = _NAME.match(entry.name)
            if m and (entry / MARKER).is_file():
                found.append((int(m.group(1)), entry))
    return sorted(found)


CONTINUE_OR_MOVE = 'set "resume_from_checkpoint": "latest" to continue it, or choose a new output_dir'


def earlier_run(output_dir: Path, resume_from_checkpoint: str | None, fix: str = CONTINUE_OR_MOVE) -> str | None:
    """Why a run may not start in output_dir: it holds an earlier run's checkpoints and this run
    does not continue it (a fresh run there would mix its checkpoints with the earlier ones, and
    the rotation could delete the new ones), with `fix` in the caller's words. None when it may start."""
    found = complete(output_dir)
    if resume_from_checkpoint or not found:
        return None
    return f"{output_dir} already holds checkpoints of an earlier run (latest: {found[-1][1].name}); {fix}"


def verify(folder: Path, hashes: bool = True) -> str | None:
    """What is wrong with a checkpoint folder, or None when every file is as it was written
    (`hashes=False`: sizes only, for a quick look at many large checkpoints)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError) as exc:
        return f"its {MARKER} cannot be read ({exc})"
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(files, dict):
        return _verify_headers(folder)
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("size"):
            return f"{name} is {size} bytes, {want.get('size')} were written"
    for name, want in files.items() if hashes else ():  # sizes first: cheap, and what a stopped copy gets wrong
        if file_digest(folder / name) != want.get("sha256"):
            return f"{name} has changed since it was written (its SHA-256 differs)"
    return None


def _verify_headers(folder: Path) -> str | None:
    """A checkpoint without a manifest: each safetensors file must hold all the data its header names."""
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                if header_len > size - 8:
                    return f"{path.name} is cut short ({size} bytes, its header alone is {header_len})"
                header = json.loads(f.read(header_len))
        except (OSError, struct.error, ValueError) as exc:
            return f"{path.name} cannot be read ({exc})"
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        if 8 + header_len + end != size:
            return f"{path.name} is {size} bytes, its header says {8 + header_len + end}"
    return None


def states(output_dir: Path, hashes: bool = True) -> list[CheckpointState]:
    """Every complete checkpoint with its verification, oldest first."""
    return [CheckpointState(step, path, verify(path, hashes)) for step, path in complete(output_dir)]


def newest_whole(output_dir: Path) -> tuple[Path | None, list[CheckpointState]]:
    """The newest checkpoint that verifies, and the newer ones skipped on the way (with why)."""
    skipped = []
    for step, path in reversed(complete(output_dir)):
        problem = verify(path)
        if problem is None:
            return path, skipped
        skipped.append(CheckpointState(step, path, problem))
    return None, skipped
