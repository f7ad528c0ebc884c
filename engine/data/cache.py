"""On-disk caches: latents per image, text embeddings per caption, and per-dataset image metadata.

Entries are safetensors files written atomically (temp file + os.replace) and named by a hash of
everything that shapes them, so a changed image, crop, size or model misses only its own entries.

With compress_disk_cache an entry is `KEY.safetensors.gz` instead of `KEY.safetensors`: a gzip
stream of a safetensors file whose tensors are stored as byte planes (byte 0 of every element,
then byte 1, …: the shuffle filter of HDF5 and Blosc). A float's sign and exponent bytes repeat
while its low mantissa bits are noise, so deflate saves about twice as much over byte planes as
over the plain layout (bench/cache_compress.py has the figures).

Compression is lossless, so the cache keys leave it out: every entry is read by its own suffix
whichever way it was written, and flipping the setting re-encodes nothing (entries already cached
keep their form, new ones take the new form); delete a cache folder to rewrite it all one way.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file

from tuner.engine.data.errors import DataError

MANIFEST_NAME = "images.json"
PLAIN_SUFFIX = ".safetensors"
COMPRESSED_SUFFIX = ".safetensors.gz"
# Level 1: over byte planes it comes within a few percent of level 6's size in a fraction of the
# time, and an entry is compressed once (reading costs the same at every level).
GZIP_LEVEL = 1
_LATENT = "latent"
_LAYOUT = "tuner_byte_planes"  # metadata of a compressed entry: {name: [dtype, shape]}


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


def compress_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A compressed entry's bytes: gzip of a safetensors file holding each tensor's byte planes."""
    layout, planes = {}, {}
    for name, t in tensors.items():
        layout[name] = [str(t.dtype).removeprefix("torch."), list(t.shape)]
        as_bytes = t.reshape(-1).view(torch.uint8).numpy().reshape(-1, t.element_size())
        planes[name] = torch.from_numpy(np.ascontiguousarray(as_bytes.T))  # numpy: 5-10× torch's uint8 transpose
    body = safetensors_bytes(planes, metadata={**metadata, _LAYOUT: json.dumps(layout)})
    return gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)


def decompress_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors compress_tensors was given, bit for bit."""
    body = gzip.decompress(data)
    header = json.loads(body[8:8 + int.from_bytes(body[:8], "little")])
    layout = json.loads(header["__metadata__"][_LAYOUT])
    planes = load_safetensors_bytes(body)
    return {name: torch.from_numpy(np.ascontiguousarray(planes[name].numpy().T)).reshape(-1)
            .view(getattr(torch, dtype)).reshape(shape) for name, (dtype, shape) in layout.items()}


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write an entry so that readers see the old file or the whole new one, never half.

    A path ending in COMPRESSED_SUFFIX is written compressed, any other as plain safetensors.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # clone(): safetensors refuses tensors that share storage (views into a batched output).
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    text = {k: str(v) for k, v in metadata.items()}
    if path.name.endswith(COMPRESSED_SUFFIX):
        tmp.write_bytes(compress_tensors(clean, text))
    else:
        save_file(clean, str(tmp), metadata=text)
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in an entry, plain or compressed (by its suffix)."""
    try:
        if path.name.endswith(COMPRESSED_SUFFIX):
            return decompress_tensors(path.read_bytes())
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error, SafetensorError, KeyError, ValueError) as e:
        # Writes are atomic, so this is a disk fault or a file edited by hand, never a killed run.
        raise DataError(f"cache entry {path} cannot be read ({type(e).__name__}: {e}); delete it and "
                        f"run again, so it is encoded anew") from e


class _Entries:
    """Where a cache's entries live: written in the configured form, read in either."""

    def __init__(self, folder: Path, compress: bool):
        self.folder = folder
        self._suffixes = (COMPRESSED_SUFFIX, PLAIN_SUFFIX) if compress else (PLAIN_SUFFIX, COMPRESSED_SUFFIX)

    def write_path(self, name: str) -> Path:
        return self.folder / f"{name}{self._suffixes[0]}"

    def find(self, name: str) -> Path | None:
        """The entry's file in the configured form, else in the other, else None."""
        for suffix in self._suffixes:
            path = self.folder / f"{name}{suffix}"
            if path.is_file():
                return path
        return None

    def path(self, name: str) -> Path:
        """The file the entry is read from when cached, else the one it would be written to."""
        return self.find(name) or self.write_path(name)

    def read(self, name: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.path(name))  # missing: FileNotFoundError naming the write path


class LatentCache:
    """One dataset's latent files under its cache_dir_vae (gzipped with compress_disk_cache)."""

    def __init__(self, folder: Path, compress: bool = False):
        self.folder = folder
        self._entries = _Entries(folder, compress)

    def path(self, key: str) -> Path:
        return self._entries.path(key)

    def has(self, key: str) -> bool:
        return self._entries.find(key) is not None

    def save(self, key: str, latent: torch.Tensor, metadata: dict[str, str]) -> None:
        atomic_save({_LATENT: latent}, self._entries.write_path(key), {"key": key, **metadata})

    def load(self, key: str) -> torch.Tensor:
        return self._entries.read(key)[_LATENT]


class TextCache:
    """Prompt embeddings under the text_embeds dataset's cache_dir, shared by every dataset."""

    def __init__(self, folder: Path, fingerprint: str, compress: bool = False):
        self.folder = folder
        self.fingerprint = fingerprint
        self._entries = _Entries(folder, compress)

    def path(self, caption: str) -> Path:
        return self._entries.path(text_key(caption, self.fingerprint))

    def has(self, caption: str) -> bool:
        return self._entries.find(text_key(caption, self.fingerprint)) is not None

    def save(self, caption: str, embedding: dict[str, torch.Tensor]) -> None:
        key = text_key(caption, self.fingerprint)
        atomic_save(embedding, self._entries.write_path(key), {"key": key, "caption": caption[:1000]})

    def load(self, caption: str) -> dict[str, torch.Tensor]:
        return self._entries.read(text_key(caption, self.fingerprint))


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
