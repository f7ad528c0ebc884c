"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is written into a hidden temporary folder and renamed to `checkpoint-<step>` only
when complete (its `checkpoint.json` marker, with every file's size and SHA-256, written last), so
a save killed half-way never leaves a "latest" that cannot load; a checkpoint damaged later (a
machine crash, a copy cut short) fails `engine.checkpoints.verify` and resume takes the one before.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tuner.engine import checkpoints
from tuner.engine.checkpoints import MARKER
from tuner.engine.train import sharding

checkpoint_dirs = checkpoints.complete


def find_latest(output_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(output_dir)
    return dirs[-1][1] if dirs else None


def resolve_resume(output_dir: Path, value: str | None) -> tuple[Path | None, list[checkpoints.CheckpointState]]:
    """The checkpoint `resume_from_checkpoint` names ('latest', a folder name or a path), and the
    newer checkpoints 'latest' skipped because they do not verify."""
    if not value:
        return None, []
    if value == "latest":
        path, skipped = checkpoints.newest_whole(output_dir)
        if path is None and skipped:
            raise FileNotFoundError(
                f"config.json: resume_from_checkpoint: latest: no checkpoint in {output_dir} is whole ("
                + "; ".join(f"{s.path.name}: {s.problem}" for s in skipped)
                + "); they are kept as they are. Restore one from a copy, or set a new output_dir to start fresh")
        return path, skipped
    path = Path(value)
    if not path.is_absolute():
        path = output_dir / path
    if not (path / MARKER).is_file():
        raise FileNotFoundError(
            f"config.json: resume_from_checkpoint: {value!r} is not a complete checkpoint "
            f"(no {MARKER} in {path}); use 'latest' or one of: "
            + (", ".join(p.name for _, p in checkpoint_dirs(output_dir)) or "none yet")
        )
    problem = checkpoints.verify(path)
    if problem:
        raise FileNotFoundError(f"config.json: resume_from_checkpoint: {value!r} is damaged: {problem}; "
                                "use 'latest' (the newest whole checkpoint) or another checkpoint")
    return path, []


# --- pieces ------------------------------------------------------------------------------

def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that training changes (all of them for full-rank; the adapter for LoRA)."""
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    if missing:
        raise ValueError(f"checkpoint does not match the model: {len(missing)} trainable weights missing, e.g. {missing[0]}")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (per-parameter state, and tensors some optimizers keep in param groups) go to
    safetensors; the rest to JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    storages: set[int] = set()

    def own(t: torch.Tensor) -> torch.Tensor:
        # safetensors refuses tensors that share memory (bitsandbytes shares one quantisation map
        # between parameters): copy only those, so large states are not duplicated.
        t = t.detach().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in storages:
            return t.clone()
        storages.add(ptr)
        return t

    for pid, state in sd["state"].items():
        for key, value in _flatten(state):
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = own(value)
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = []
    for index, group in enumerate(sd["param_groups"]):
        plain = {}
        for key, value in group.items():
            if torch.is_tensor(value):
                tensors[f"group{index}.{key}"] = own(value)
            else:
                plain[key] = value
        groups.append(plain)
    return tensors, {"param_groups": groups, "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    # JSON turns tuples (betas) into lists; optimizers compare and index them as tuples.
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["param_groups"]]
    for name, tensor in tensors.items():
        owner, key = name.split(".", 1)
        if owner.startswith("group"):
            groups[int(owner[5:])][key] = tensor
        else:
            _unflatten(state.setdefault(int(owner), {}), key, tensor)
    for pid, values in meta["scalars"].items():
        for key, value in values.items():
            _unflatten(state.setdefault(int(pid), {}), key, value)
    return {"state": state, "param_groups": groups}


# bitsandbytes keeps its 8-bit state as a nested dict of tensors under one key; nested keys are
# joined with "/" (never part of an optimizer's own key names) so they survive the flat files.
def _flatten(state: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in state.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}/")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _unflatten(state: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split("/")
    for parent in parents:
        state = state.setdefault(parent, {})
    state[leaf] = value


def rng_state(generator: torch.Generator, noise: torch.Generator | None = None
              ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The random states to save: torch's, the loop's generator and (on a GPU) its device noise generator."""
    tensors = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if noise is not None and noise is not generator:
        tensors["noise"] = noise.get_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _listify(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, meta


def set_rng_state(generator: torch.Generator, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                  noise: torch.Generator | None = None) -> None:
    torch.set_rng_state(tensors["torch"])
    generator.set_state(tensors["generator"])
    if noise is not None and noise is not generator and "noise" in tensors:
        noise.set_state(tensors["noise"])
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"cuda.{i}" in tensors:
                torch.cuda.set_rng_state(tensors[f"cuda.{i}"], i)
    random.setstate(_tuplify(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))


def _listify(v: Any) -> Any:
    return [_listify(x) for x in v] if isinstance(v, (tuple, list)) else v


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, list) else v


# --- disk ------------------------------------------------------------------------------------

class DiskFull(OSError):
    """Not enough free space at the output folder for the next save; what exists is kept."""


# Room kept beyond the estimate: the filesystem's own overhead, and the logs that keep growing.
DISK_MARGIN = 1.1


def needed_bytes(output_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """The size of the next checkpoint: the last one's, or the trained weights and optimizer state."""
    dirs = checkpoint_dirs(output_dir)
    if dirs:
        return sum(p.stat().st_size for p in dirs[-1][1].rglob("*") if p.is_file())
    weights = sum(t.numel() * t.element_size() for t in trainable_state(model).values())
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v))
    return weights + (state or 2 * 4 * sum(p.numel() for g in optimizer.param_groups for p in g["params"]))


def check_free_space(output_dir: Path, needed: int, what: str) -> None:
    """Raise DiskFull, naming the folder and the figures, when `needed` bytes (with margin) do not fit."""
    free = _free_bytes(output_dir)
    if free < needed * DISK_MARGIN:
        raise DiskFull(disk_full_message(output_dir, what, needed, free))


def _free_bytes(folder: Path) -> int:
    """Free space on the filesystem `folder` is (or will be, before the first save makes it) on."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def disk_full_message(output_dir: Path, what: str, needed: int, free: int | None = None) -> str:
    if free is None:
        free = _free_bytes(output_dir)
    gib = 1 << 30
    return (f"not enough disk space in {output_dir} for {what}: about {needed * DISK_MARGIN / gib:.2f} GiB needed, "
            f"{free / gib:.2f} GiB free. Nothing was lost: the earlier checkpoints are kept. Free some space (or lower "
            "checkpoints_total_limit, or move output_dir) and resume with resume_from_checkpoint: latest")


# --- save / load ---------------------------------------------------------------------------

def begin(output_dir: Path, step: int) -> Path:
    """Make the temporary folder a checkpoint is written into (rank 0, before the others write)."""
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_main(tmp: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, ema: Any, state: dict[str, Any], sharded: bool = False) -> None:
    """Rank 0's share: weights, optimizer, scheduler, EMA and the JSON training state (under FSDP
    the weights, optimizer and EMA are every process's, written by sharding.save)."""
    if not sharded:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        if ema is not None:
            save_file(ema.state_dict(), str(tmp / "ema.safetensors"))
    state = {**state, "scheduler": scheduler.state_dict()}
    (tmp / "state.json").write_text(json.dumps(state, indent=2))


def write_rank(tmp: Path, rank: int, generator: torch.Generator, noise: torch.Generator | None = None) -> None:
    """Every rank's own share: its random number generator states."""
    tensors, meta = rng_state(generator, noise)
    save_file(tensors, str(tmp / f"rng-{rank}.safetensors"))
    (tmp / f"rng-{rank}.json").write_text(json.dumps(meta))


def commit(tmp: Path, output_dir: Path, step: int, limit: int | None, keep: Collection[Path] = ()) -> Path:
    """Mark the checkpoint complete, give it its name, and drop the oldest past `limit` (but those in
    `keep`: checkpoints still being uploaded, dropped by a later rotation)."""
    marker = {"step": step, "time": time.time(), "format": checkpoints.FORMAT, "files": checkpoints.manifest(tmp)}
    with open(tmp / MARKER, "w") as f:
        json.dump(marker, f)
        f.flush()
        os.fsync(f.fileno())
    final = output_dir / f"checkpoint-{step}"
    if final.exists() and (final / MARKER).is_file() and checkpoints.verify(final):
        # A damaged checkpoint resume skipped: the user's to inspect or restore, never deleted.
        os.replace(final, output_dir / f"{final.name}.damaged-{int(time.time())}")
    elif final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    rotate(output_dir, limit, keep)
    return final


def rotate(output_dir: Path, limit: int | None, keep: Collection[Path] = ()) -> None:
    """Delete the oldest checkpoints past `limit` (checkpoints_total_limit), except those in `keep`."""
    if limit:
        for _, old in checkpoint_dirs(output_dir)[:-limit]:
            if old not in keep:
                shutil.rmtree(old, ignore_errors=True)


def load(path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         ema: Any, generator: torch.Generator, rank: int, sharded: bool = False,
         noise: torch.Generator | None = None) -> dict[str, Any]:
    """Restore everything `write_main`/`write_rank` (and, under FSDP, sharding.save) saved; returns the
    JSON training state."""
    written_sharded = sharding.is_sharded_checkpoint(path)
    if written_sharded != sharded:
        raise ValueError(
            f"config.json: resume_from_checkpoint: {path.name} was written "
            + ("sharded by FSDP; resume it with fsdp_enable: true on several processes"
               if written_sharded else "without FSDP; resume it with fsdp_enable off, or start a new output_dir")
            + " (the checkpoint is kept as it is)")
    if sharded:
        sharding.load(path, model, optimizer, ema)
    else:
        load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
        meta = json.loads((path / "optimizer.json").read_text())
        optimizer.load_state_dict(_join_optimizer(load_file(str(path / "optimizer.safetensors")), meta))
        if ema is not None:
            ema_file = path / "ema.safetensors"
            if ema_file.is_file():
                ema.load_state_dict(load_file(str(ema_file)))
    state = json.loads((path / "state.json").read_text())
    scheduler.load_state_dict(state.pop("scheduler"))
    load_rng(path, rank, generator, noise)
    return state


def load_rng(path: Path, rank: int, generator: torch.Generator, noise: torch.Generator | None = None) -> None:
    """This process's random state as saved; a process the checkpoint had not (resumed on more
    processes) takes rank 0's moved to a stream of its own, so its noise differs from every other's
    and a second resume draws the same again."""
    rng_file = path / f"rng-{rank}.safetensors"
    if rng_file.is_file():
        set_rng_state(generator, load_file(str(rng_file)), json.loads(rng_file.with_suffix(".json").read_text()),
                      noise)
        return
    rank0 = path / "rng-0.safetensors"
    set_rng_state(generator, load_file(str(rank0)), json.loads(rank0.with_suffix(".json").read_text()), noise)
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator)) + rank
    for stream in {id(g): g for g in (generator, noise) if g is not None}.values():
        stream.manual_seed(seed)
    torch.manual_seed(seed)
