"""Local image datasets to training batches: discovery, captions, buckets, crops, caches, sampler."""
from tuner.engine.data.errors import DataError
from tuner.engine.data.prepare import prepare_data
from tuner.engine.data.train_data import Batch, TrainData

__all__ = ["Batch", "DataError", "TrainData", "prepare_data"]
