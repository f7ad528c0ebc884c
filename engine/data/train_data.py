"""What the training loop draws from: batches for this process, epochs, and resumable sampler state."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from tuner.engine.data.cache import LatentCache, TextCache
from tuner.engine.data.errors import DataError
from tuner.engine.data.sampler import DatasetBuckets, EpochPlan, order_seed, plan_epoch, process_slice
from tuner.engine.data.scan import Sample
from tuner.engine.data.video import sample_pixels

STATE_VERSION = 1


@dataclass
class Batch:
    """One process's micro-batch: samples of one bucket of one dataset."""

    latents: torch.Tensor                 # (B, C, h, w) float32; video (B, C, f, h, w)
    text: dict[str, torch.Tensor]         # family.collate_text of the cached embeddings
    captions: list[str]
    is_regularisation: torch.Tensor       # (B,) bool
    paths: list[str]
    dataset_ids: list[str]
    # Image-to-video clips: their first latent frame (B, C, 1, h, w), which Wan's causal VAE encodes
    # from the first frame alone; the loop gives it to the model clean (flow.condition_on_first_frame).
    first_frame: torch.Tensor | None = None


class TrainData:
    """Cached samples plus the epoch plan; `next_batch` walks it and `state_dict` saves the place."""

    def __init__(self, samples: list[Sample], datasets: list[DatasetBuckets], family: Any,
                 latent_caches: dict[str, LatentCache], text_cache: TextCache, *, batch_size: int,
                 num_processes: int, process_index: int, seed: int | None, encode_on_the_fly: bool):
        self.samples = samples
        self.datasets = datasets
        self.family = family
        self.latent_caches = latent_caches
        self.text_cache = text_cache
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.seed = seed
        self.encode_on_the_fly = encode_on_the_fly
        self.encoded_latents = self.encoded_prompts = self.reused_latents = self.reused_prompts = 0
        self.dropped_per_epoch: dict[str, int] = {}
        self.epoch = 1
        self.position = 0
        self._plan: EpochPlan | None = None
        self._plan_epoch = 0
        self.batches_per_epoch = len(self._current_plan().batches)
        self.dropped_per_epoch = dict(self._current_plan().dropped)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_processes

    def _current_plan(self) -> EpochPlan:
        if self._plan is None or self._plan_epoch != self.epoch:
            self._plan = plan_epoch(self.datasets, self.global_batch, self.seed, self.epoch)
            self._plan_epoch = self.epoch
        return self._plan

    def next_batch(self) -> Batch:
        """This process's next micro-batch; starts the next (reshuffled) epoch when one ends."""
        plan = self._current_plan()
        if self.position >= len(plan.batches):
            self.epoch += 1
            self.position = 0
            plan = self._current_plan()
        if not plan.batches:
            raise DataError("no dataset has a full batch; lower train_batch_size or add repeats")
        indices = process_slice(plan.batches[self.position], self.batch_size, self.process_index)
        chosen = [self._caption(i, slot) for slot, i in enumerate(indices)]
        self.position += 1
        samples = [self.samples[i] for i in indices]
        latents = self._latents(samples)
        return Batch(
            latents=latents,
            text=self.family.collate_text([self._text(c, s) for c, s in zip(chosen, samples)]),
            captions=chosen,
            is_regularisation=torch.tensor([s.is_regularisation for s in samples], dtype=torch.bool),
            paths=[str(s.path) for s in samples],
            dataset_ids=[s.dataset_id for s in samples],
            first_frame=latents[:, :, :1].clone() if any(s.is_i2v for s in samples) else None,
        )

    def _caption(self, index: int, slot: int) -> str:
        """One of a sample's captions, fixed by seed, epoch and position so a resume repeats it."""
        captions = self.samples[index].captions
        if len(captions) == 1:
            return captions[0]
        digest = hashlib.sha256(f"{self.seed}:{self.epoch}:{self.position}:{slot}:{index}".encode()).digest()
        return captions[int.from_bytes(digest[:8], "big") % len(captions)]

    def _latents(self, samples: list[Sample]) -> torch.Tensor:
        if self.encode_on_the_fly:
            pixels = torch.stack([sample_pixels(s) for s in samples])
            with torch.no_grad():
                return self.family.encode_pixels(pixels).float()
        try:
            return torch.stack([self.latent_caches[s.dataset_id].load(s.key) for s in samples]).float()
        except FileNotFoundError as e:
            raise DataError(f"latent cache entry missing for {samples[0].path} ({e.filename}); was the "
                            f"cache folder of dataset {samples[0].dataset_id!r} deleted during training? "
                            f"Restart so it is rebuilt") from e

    def _text(self, caption: str, sample: Sample) -> dict[str, torch.Tensor]:
        try:
            return self.text_cache.load(caption)
        except FileNotFoundError as e:
            raise DataError(f"text embedding cache entry missing for the caption of {sample.path} "
                            f"({e.filename}); restart so it is rebuilt") from e

    def text_for(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        """Cached embeddings of prompts passed to prepare_data (captions, extra_prompts or "")."""
        out = []
        for prompt in prompts:
            if not self.text_cache.has(prompt):
                raise DataError(f"prompt {prompt[:80]!r} has no cached embedding; pass it to "
                                f"prepare_data(extra_prompts=[...]) so it is encoded before training")
            out.append(self.text_cache.load(prompt))
        return out

    def state_dict(self) -> dict:
        """JSON-able sampler position: the plan is a function of (seed, epoch), so this is enough."""
        return {"version": STATE_VERSION, "seed": self.seed, "epoch": self.epoch,
                "position": self.position, "order_seed": order_seed(self.seed, self.epoch),
                "batches_per_epoch": self.batches_per_epoch, "num_samples": len(self.samples),
                "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position (a changed dataset keeps the epoch; the order then differs)."""
        if state.get("version") != STATE_VERSION:
            raise DataError(f"sampler state version {state.get('version')!r} is not {STATE_VERSION}; "
                            f"this checkpoint was written by another version of tuner")
        self.seed = state["seed"]
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._plan = None
