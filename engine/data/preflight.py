"""`tuner check`'s look at the data: the scan and the size checks a run starts with, without a model.

The geometry comes from the family card (the published checkpoints' alignment and temporal
compression), so a tiny model of other proportions may bucket a little differently at training.
Nothing is written: the size manifests are read when a run left them, never saved.
"""
from __future__ import annotations

from collections import Counter

from tuner.engine.config import ConfigBundle, Issue, display
from tuner.engine.data.cache import read_manifest
from tuner.engine.data.errors import DataError
from tuner.engine.data.prepare import check_buckets, check_size, dataset_spec
from tuner.engine.data.scan import scan_dataset


def data_issues(bundle: ConfigBundle, processes: int = 1) -> list[Issue]:
    """Every dataset problem training would stop at (errors) or skip over (warnings), by dataset."""
    cfg, card = bundle.train, bundle.train.family
    file = display(bundle.databackend_path) if bundle.databackend_path else "multidatabackend.json"
    needed = cfg.train_batch_size * cfg.gradient_accumulation_steps * processes
    rule = (f"train_batch_size {cfg.train_batch_size} × gradient_accumulation_steps "
            f"{cfg.gradient_accumulation_steps} × {processes} processes")
    issues = []
    for ds in bundle.enabled_datasets:
        try:
            spec = dataset_spec(bundle, ds, card.temporal_compression)
            result = scan_dataset(spec, read_manifest(spec.cache_dir, spec.folder), card.pixel_alignment,
                                  "preflight", cfg.seed)
            for reason, paths in result.named_skips.items():
                issues.append(Issue("warning", file, ds.id, f"{len(paths)} files skipped, {reason}: "
                                    + ", ".join(p.name for p in paths[:10]) + (" …" if len(paths) > 10 else "")))
            for path, why in result.broken:
                issues.append(Issue("warning", file, ds.id, f"unreadable, skipped: {path.name} ({why})"))
            check_size(result, needed, rule)
            sizes = Counter(s.bucket for s in result.samples)
            check_buckets(spec, [list(range(n)) for n in sizes.values()], cfg.train_batch_size * processes)
        except DataError as e:
            message = str(e)
            for prefix in (f"dataset {ds.id!r}: ", f"dataset {ds.id!r} "):
                message = message.removeprefix(prefix)
            issues.append(Issue("error", file, ds.id, message))
    return issues
