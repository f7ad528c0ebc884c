"""Local image and video datasets to training batches: discovery, captions, buckets, crops, caches, sampler.

The public names load on first use, so the torch-free rule modules (discovery, captions, sizing,
buckets) can be imported by the TUI's dataset scan without pulling in torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataError": "tuner.engine.data.errors",
    "prepare_data": "tuner.engine.data.prepare",
    "Batch": "tuner.engine.data.train_data",
    "TrainData": "tuner.engine.data.train_data",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tuner.engine.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
