"""From a loaded config to TrainData: scan every dataset, check sizes, fill the caches, plan epochs."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tuner.engine.config import ConfigBundle, DatasetConfig
from tuner.engine.data.cache import LatentCache, TextCache, read_manifest, write_manifest
from tuner.engine.data.encode import encode_latents, encode_texts
from tuner.engine.data.errors import DataError
from tuner.engine.data.sampler import DatasetBuckets
from tuner.engine.data.scan import DatasetSpec, ScanResult, scan_dataset
from tuner.engine.data.sizing import SizeRule
from tuner.engine.data.train_data import TrainData
from tuner.engine.data.video import VideoSpec, bucket_name

_MANIFEST_SKIPS = ("aspect", "metadata", "discovery")


def video_spec(ds: DatasetConfig, temporal_compression: int) -> VideoSpec | None:
    """A video dataset's clip settings (None for an image dataset)."""
    if ds.dataset_type != "video":
        return None
    fields = ds.video.model_dump() if ds.video is not None else {}
    return VideoSpec(temporal_compression=temporal_compression, **fields)


def dataset_spec(bundle: ConfigBundle, ds: DatasetConfig, temporal_compression: int = 1) -> DatasetSpec:
    """A dataset's settings with the global defaults filled in and its paths made absolute."""
    cfg = bundle.train
    if ds.type != "local":
        raise DataError(f"dataset {ds.id!r}: type {ds.type!r} is not supported; use 'local'")
    if not ds.instance_data_dir:
        raise DataError(f"dataset {ds.id!r}: instance_data_dir is missing; set it to the image folder")
    output_dir = bundle.resolve(cfg.output_dir)
    cache_dir = bundle.resolve(ds.cache_dir_vae) if ds.cache_dir_vae else output_dir / "cache" / "vae" / ds.id
    return DatasetSpec(
        id=ds.id,
        folder=bundle.resolve(ds.instance_data_dir),
        cache_dir=cache_dir,
        size=SizeRule.of(cfg, ds),
        crop=ds.crop,
        crop_aspect=ds.crop_aspect,
        crop_aspect_buckets=tuple(ds.crop_aspect_buckets or ()),
        crop_style=ds.crop_style,
        caption_strategy=ds.caption_strategy,
        instance_prompt=ds.instance_prompt,
        repeats=ds.repeats,
        probability=ds.probability,
        is_regularisation=ds.is_regularisation_data,
        use_manifest_only=any(word in ds.skip_file_discovery.lower() for word in _MANIFEST_SKIPS),
        video=video_spec(ds, temporal_compression),
    )


def text_cache_dir(bundle: ConfigBundle) -> tuple[str, Path]:
    """The text-embed cache's dataset id (for events) and folder."""
    text_ds = bundle.text_embeds_dataset
    if text_ds is not None and text_ds.cache_dir:
        return text_ds.id, bundle.resolve(text_ds.cache_dir)
    return (text_ds.id if text_ds is not None else "text"), bundle.resolve(bundle.train.output_dir) / "cache" / "text"


def check_size(result: ScanResult, needed: int, batch_rule: str) -> None:
    """Refuse a dataset too small for one optimizer step, saying how many repeats would fix it."""
    spec, usable = result.spec, len(result.samples)
    why = "; ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items()))
    if usable == 0:
        raise DataError(f"dataset {spec.id!r}: none of the {result.found} images in {spec.folder} is "
                        f"usable ({why})")
    if usable * (spec.repeats + 1) < needed:
        fix = math.ceil(needed / usable) - 1
        raise DataError(
            f"dataset {spec.id!r} has {usable} usable images × (repeats {spec.repeats} + 1) = "
            f"{usable * (spec.repeats + 1)} samples per epoch, fewer than the {needed} one optimizer "
            f"step needs ({batch_rule}); set \"repeats\": {fix} in multidatabackend.json, add "
            f"images, or lower train_batch_size / gradient_accumulation_steps"
            + (f" (skipped: {why})" if why else ""))


def check_buckets(spec: DatasetSpec, buckets: list[list[int]], global_batch: int) -> None:
    """Refuse a dataset whose images are spread over buckets too small to fill one global batch."""
    largest = max(len(b) for b in buckets)
    if largest * (spec.repeats + 1) >= global_batch:
        return
    fix = math.ceil(global_batch / largest) - 1
    raise DataError(
        f"dataset {spec.id!r}: its images fall into {len(buckets)} aspect buckets of at most "
        f"{largest} images, and no bucket fills a batch of {global_batch} (train_batch_size × "
        f"processes); use \"crop\": true with \"crop_aspect\": \"square\", or set \"repeats\": {fix}")


def _log(events: Any, level: str, message: str) -> None:
    if events is not None:
        events.emit("log", level=level, message=message)


def _scan_all(bundle: Any, datasets: list, family: Any, fingerprint: str, events: Any, *,
              is_main: bool) -> list[ScanResult]:
    """Scan every dataset, report (and maybe delete) broken images; the main process saves manifests."""
    cfg = bundle.train
    results = []
    for ds in datasets:
        spec = dataset_spec(bundle, ds, int(getattr(family, "temporal_compression", 1)))
        result = scan_dataset(spec, read_manifest(spec.cache_dir, spec.folder), family.pixel_alignment,
                              fingerprint, cfg.seed)
        for reason, paths in result.named_skips.items():
            names = ", ".join(p.name for p in paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
            _log(events, "warning", f"dataset {spec.id!r}: skipped {len(paths)} {reason}: {names}")
        for path, reason in result.broken:
            deleted = is_main and cfg.delete_problematic_images
            if deleted:
                path.unlink(missing_ok=True)
            _log(events, "warning", f"dataset {spec.id!r}: skipped broken image {path} ({reason})"
                                    + ("; deleted (delete_problematic_images)" if deleted else ""))
        if is_main:
            write_manifest(spec.cache_dir, spec.folder, result.manifest)
        results.append(result)
    return results


def prepare_data(bundle: Any, family: Any, *, num_processes: int = 1, process_index: int = 0,
                 is_main: bool = True, wait_for_main: Callable[[], None] = lambda: None,
                 events: Any = None, extra_prompts: Iterable[str] = ()) -> TrainData:
    """Scan, check, cache (main process) and wait (every process) — then the data is ready to draw.

    `wait_for_main` is a barrier every process calls twice: after the main process's scan and
    after its encoding (accelerate's wait_for_everyone).
    """
    cfg = bundle.train
    events = events if is_main else None
    emit = events.emit if events is not None else (lambda *a, **k: None)
    datasets = bundle.enabled_datasets
    if not datasets:
        raise DataError("multidatabackend.json has no enabled image dataset; add one with "
                        "\"dataset_type\": \"image\" and an instance_data_dir")
    fingerprint = family.fingerprint()
    batch_size = cfg.train_batch_size
    needed = batch_size * cfg.gradient_accumulation_steps * num_processes
    rule = (f"train_batch_size {batch_size} × gradient_accumulation_steps "
            f"{cfg.gradient_accumulation_steps} × {num_processes} processes")
    on_the_fly = cfg.vae_cache_disable

    if is_main:
        try:
            results = _scan_all(bundle, datasets, family, fingerprint, events, is_main=True)
        except DataError:
            wait_for_main()  # the others then scan, meet the same error and stop too
            raise
        wait_for_main()
    else:
        # After the main process has written the size manifests, so images are not decoded twice.
        wait_for_main()
        results = _scan_all(bundle, datasets, family, fingerprint, events, is_main=False)
    for result in results:
        check_size(result, needed, rule)

    samples = []
    plans = []
    for result in results:
        by_bucket: dict[tuple[int, int], list[int]] = defaultdict(list)
        for s in result.samples:
            by_bucket[s.bucket].append(len(samples))
            samples.append(s)
        buckets = [by_bucket[k] for k in sorted(by_bucket)]
        check_buckets(result.spec, buckets, batch_size * num_processes)
        plans.append(DatasetBuckets(id=result.spec.id, buckets=tuple(tuple(b) for b in buckets),
                                    repeats=result.spec.repeats, probability=result.spec.probability))
    if not any(p.probability > 0 for p in plans):
        raise DataError("every dataset has \"probability\": 0; give at least one a positive probability")

    text_id, text_dir = text_cache_dir(bundle)
    compress = cfg.compress_disk_cache
    latent_caches = {r.spec.id: LatentCache(r.spec.cache_dir, compress) for r in results}
    text_cache = TextCache(text_dir, fingerprint, compress)
    data = TrainData(samples, plans, family, latent_caches, text_cache, batch_size=batch_size,
                     num_processes=num_processes, process_index=process_index, seed=cfg.seed,
                     encode_on_the_fly=on_the_fly)

    prompts = [c for s in samples for c in s.captions] + [""] + list(extra_prompts)
    if is_main:
        data.encoded_prompts, data.reused_prompts = encode_texts(text_id, prompts, text_cache, family, emit)
    for result in results:
        spec = result.spec
        if on_the_fly:
            lat = "encoded on the fly (vae_cache_disable)"
        elif is_main:
            enc, reu = encode_latents(spec.id, result.samples, latent_caches[spec.id], family,
                                      cfg.vae_batch_size, emit)
            data.encoded_latents += enc
            data.reused_latents += reu
            lat = f"latents encoded {enc}, reused {reu}"
        else:
            lat = "latents read from the main process's cache"
        skipped = sum(result.skipped.values())
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items()))
        n_buckets = len({s.bucket for s in result.samples})
        if spec.video is not None:  # clip buckets by name, e.g. 832x480@81
            names = sorted({bucket_name(s.bucket, spec.video.bucket_strategy) for s in result.samples})
            lat += f"; buckets {', '.join(names[:8])}" + (" …" if len(names) > 8 else "")
        dropped = data.dropped_per_epoch.get(spec.id, 0)
        _log(events, "info",
             f"dataset {spec.id!r}: found {result.found} {'videos' if spec.video else 'images'}, skipped {skipped}"
             + (f" ({why})" if why else "") + f", {len(result.samples)} usable in {n_buckets} buckets "
             f"× {spec.repeats + 1} passes; {lat}"
             + (f"; {dropped} samples per epoch dropped (buckets not filling a batch of "
                f"{batch_size * num_processes})" if dropped else ""))
    if is_main:
        _log(events, "info", f"text embeddings: encoded {data.encoded_prompts}, reused {data.reused_prompts}")
    if on_the_fly:
        family.load_vae()
    wait_for_main()
    if not is_main:
        data.reused_prompts = len(set(prompts))
        data.reused_latents = 0 if on_the_fly else len(samples)
    return data
