"""The epoch plan: which global batch comes when, a pure function of the seed and the epoch.

Each dataset's buckets are shuffled (once per repeat) and cut into global batches of
train_batch_size × num_processes samples; leftovers are dropped for the epoch. Datasets are then
interleaved, each step picking one with probability ∝ its `probability` among those with batches
left. Because the plan depends only on (seed, epoch), resuming needs only epoch and position.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetBuckets:
    """One dataset's sample indices grouped by bucket, with its repeats and probability."""

    id: str
    buckets: tuple[tuple[int, ...], ...]
    repeats: int = 0
    probability: float = 1.0


@dataclass(frozen=True)
class EpochPlan:
    """An epoch's global batches (sample indices) and how many samples each dataset dropped."""

    batches: tuple[tuple[int, ...], ...]
    dataset_of_batch: tuple[str, ...]
    dropped: dict[str, int]


def order_seed(seed: int | None, epoch: int) -> int:
    """The shuffle seed of one epoch."""
    digest = hashlib.sha256(f"tuner-epoch:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def batches_of(data: DatasetBuckets, global_batch: int, rng: random.Random) -> tuple[list[tuple[int, ...]], int]:
    """A dataset's shuffled global batches for one epoch and the number of samples left over."""
    batches: list[tuple[int, ...]] = []
    dropped = 0
    for bucket in data.buckets:
        items: list[int] = []
        # One shuffle per pass keeps repeats of an image apart instead of in the same batch.
        for _ in range(data.repeats + 1):
            chunk = list(bucket)
            rng.shuffle(chunk)
            items.extend(chunk)
        full = len(items) // global_batch
        batches.extend(tuple(items[i * global_batch:(i + 1) * global_batch]) for i in range(full))
        dropped += len(items) - full * global_batch
    rng.shuffle(batches)
    return batches, dropped


def plan_epoch(datasets: list[DatasetBuckets], global_batch: int, seed: int | None, epoch: int) -> EpochPlan:
    """The full order of global batches of `epoch` (1-based)."""
    rng = random.Random(order_seed(seed, epoch))
    queues: list[list[tuple[int, ...]]] = []
    dropped: dict[str, int] = {}
    for data in datasets:
        batches, lost = batches_of(data, global_batch, rng)
        queues.append(batches)
        dropped[data.id] = lost
    order: list[tuple[int, ...]] = []
    owners: list[str] = []
    heads = [0] * len(datasets)
    while True:
        live = [i for i, d in enumerate(datasets) if heads[i] < len(queues[i]) and d.probability > 0]
        if not live:
            break
        i = rng.choices(live, weights=[datasets[j].probability for j in live], k=1)[0]
        order.append(queues[i][heads[i]])
        owners.append(datasets[i].id)
        heads[i] += 1
    return EpochPlan(batches=tuple(order), dataset_of_batch=tuple(owners), dropped=dropped)


def process_slice(global_batch: tuple[int, ...], batch_size: int, process_index: int) -> tuple[int, ...]:
    """The part of a global batch that one process trains on (disjoint across processes)."""
    return global_batch[process_index * batch_size:(process_index + 1) * batch_size]
