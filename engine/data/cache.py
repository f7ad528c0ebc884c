"""On-disk caches: latents per image, text embeddings per caption, and per-dataset image metadata.

Entries are safetensors files written atomically (temp file + os.replace) and named by a hash of
everything that shapes them, so a changed image, crop, size or model misses only its own entries.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

MANIFEST_NAME = "images.json"
_LATENT = "latent"


def _digest(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]


def file_content_hash(path: Path) -> str:
    """A hash of a file's bytes (for datasets whose tools keep mtimes when rewriting files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def latent_key(path: Path, mtime_ns: int, size: int, content_hash: str | None,
               downsampled: tuple[int, int], resized: tuple[int, int],
               box: tuple[int, int, int, int], fingerprint: str) -> str:
    """The cache key of one image's latent under one crop, size and model."""
    return _digest(["latent-v1", str(path), mtime_ns, size, content_hash, list(downsampled),
                    list(resized), list(box), fingerprint])


def text_key(caption: str, fingerprint: str) -> str:
    """The cache key of one caption's embedding under one model."""
    return _digest(["text-v1", caption, fingerprint])


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that readers see the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # clone(): safetensors refuses tensors that share storage (views into a batched output).
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(clean, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


class LatentCache:
    """One dataset's latent files under its cache_dir_vae."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def save(self, key: str, latent: torch.Tensor, metadata: dict[str, str]) -> None:
        atomic_save({_LATENT: latent}, self.path(key), {"key": key, **metadata})

    def load(self, key: str) -> torch.Tensor:
        return load_tensors(self.path(key))[_LATENT]


class TextCache:
    """Prompt embeddings under the text_embeds dataset's cache_dir, shared by every dataset."""

    def __init__(self, folder: Path, fingerprint: str):
        self.folder = folder
        self.fingerprint = fingerprint

    def path(self, caption: str) -> Path:
        return self.folder / f"{text_key(caption, self.fingerprint)}.safetensors"

    def has(self, caption: str) -> bool:
        return self.path(caption).is_file()

    def save(self, caption: str, embedding: dict[str, torch.Tensor]) -> None:
        key = text_key(caption, self.fingerprint)
        atomic_save(embedding, self.path(caption), {"key": key, "caption": caption[:1000]})

    def load(self, caption: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.path(caption))


def read_manifest(folder: Path, images_dir: Path) -> dict[str, dict]:
    """Known image sizes by path ({} when missing, unreadable or for another folder: sizes are then probed again)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError):
        # A damaged manifest only costs a re-probe of image sizes; the latents stay valid.
        return {}
    # Two datasets sharing a cache_dir_vae must not read each other's sizes.
    if not isinstance(data, dict) or data.get("images_dir") != str(images_dir):
        return {}
    return data.get("images", {})


def write_manifest(folder: Path, images_dir: Path, images: dict[str, dict]) -> None:
    """Save known image sizes (JSON, atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{MANIFEST_NAME}.{os.getpid()}.tmp"
    body = {"version": 1, "images_dir": str(images_dir), "images": images}
    tmp.write_text(json.dumps(body, indent=0), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST_NAME)
