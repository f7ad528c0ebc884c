"""Filling the caches: latents per dataset in vae_batch_size chunks, prompt embeddings in chunks."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from tuner.engine.data.cache import LatentCache, TextCache
from tuner.engine.data.errors import DataError
from tuner.engine.data.pixels import BrokenImage
from tuner.engine.data.scan import Sample
from tuner.engine.data.video import bucket_name, sample_pixels

Emit = Callable[..., None]
TEXT_CHUNK = 16


def encode_latents(dataset_id: str, samples: list[Sample], cache: LatentCache, family,
                   vae_batch_size: int, emit: Emit) -> tuple[int, int]:
    """Encode every sample whose latent is not cached; returns (encoded, reused)."""
    missing = [s for s in samples if not cache.has(s.key)]
    reused = len(samples) - len(missing)
    total = len(samples)
    emit("cache", dataset=dataset_id, kind="latents", done=reused, total=total)
    if not missing:
        return 0, reused
    family.load_vae()
    by_bucket: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in missing:
        by_bucket[s.bucket].append(s)
    done = reused
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        step = max(1, vae_batch_size)
        for start in range(0, len(group), step):
            chunk = group[start:start + step]
            try:
                pixels = torch.stack([sample_pixels(s) for s in chunk])
            except BrokenImage as e:
                raise DataError(f"dataset {dataset_id!r}: {e} (the file changed after the scan; "
                                f"run again)") from e
            with torch.no_grad():
                latents = family.encode_pixels(pixels)
            for s, latent in zip(chunk, latents):
                cache.save(s.key, latent, {"path": str(s.path), "size": bucket_name(bucket),
                                           "crop": ",".join(map(str, s.box))})
            done += len(chunk)
            emit("cache", dataset=dataset_id, kind="latents", done=done, total=total)
    return len(missing), reused


def encode_texts(dataset_id: str, prompts: list[str], cache: TextCache, family,
                 emit: Emit) -> tuple[int, int]:
    """Encode every prompt (and "" through empty_prompt) not cached yet; returns (encoded, reused)."""
    unique = list(dict.fromkeys(prompts))
    missing = [p for p in unique if not cache.has(p)]
    reused = len(unique) - len(missing)
    emit("cache", dataset=dataset_id, kind="text", done=reused, total=len(unique))
    if not missing:
        return 0, reused
    family.load_text_encoders()
    done = reused
    if "" in missing:
        # The unconditional embedding is the family's own (zeros for some), not an encoded "".
        cache.save("", family.empty_prompt())
        missing.remove("")
        done += 1
    for start in range(0, len(missing), TEXT_CHUNK):
        chunk = missing[start:start + TEXT_CHUNK]
        with torch.no_grad():
            embeddings = family.encode_prompts(chunk)
        for prompt, embedding in zip(chunk, embeddings):
            cache.save(prompt, embedding)
        done += len(chunk)
        emit("cache", dataset=dataset_id, kind="text", done=done, total=len(unique))
    family.unload_text_encoders()
    return len(unique) - reused, reused
