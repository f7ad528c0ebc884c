"""Helpers for the data pipeline tests: images on disk, config bundles and a counting encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tuner.engine.config import ConfigBundle, DatasetConfig, TrainConfig


def make_image(path: Path, width: int, height: int, seed: int = 0, fmt: str | None = None) -> Path:
    """Write a noisy RGB image (distinct per seed) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return path


def make_bundle(tmp: Path, datasets: list[dict], **train) -> ConfigBundle:
    """A ConfigBundle like a loaded config folder under `tmp`, with a text_embeds dataset."""
    train = {"output_dir": str(tmp / "out"), "resolution": 64, "resolution_type": "pixel",
             "seed": 7, "train_batch_size": 1, "vae_batch_size": 4, **train}
    ds = [DatasetConfig(**d) for d in datasets]
    ds.append(DatasetConfig(id="text", dataset_type="text_embeds", default=True))
    return ConfigBundle(TrainConfig(**train), ds, {}, tmp / "config.json", None, None, base_dir=tmp)


class CountingFamily:
    """A stand-in encoder with the ModelFamily encoding surface that counts what it encodes."""

    name = "counting"
    pixel_alignment = 8
    latent_channels = 4

    def __init__(self, version: str = "1"):
        self.version = version
        self.pixels_encoded = 0
        self.prompts_encoded: list[str] = []
        self.empty_calls = 0

    def fingerprint(self) -> str:
        return f"counting-{self.version}"

    def load_vae(self) -> None:
        pass

    def load_text_encoders(self) -> None:
        pass

    def unload_text_encoders(self) -> None:
        pass

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.pixels_encoded += pixels.shape[0]
        pooled = F.avg_pool2d(pixels, 8)
        return torch.cat([pooled, pooled.mean(1, keepdim=True)], dim=1)

    def encode_prompts(self, prompts: list[str]) -> list[dict[str, torch.Tensor]]:
        self.prompts_encoded.extend(prompts)
        return [{"emb": torch.full((3, 2), float(len(p)))} for p in prompts]

    def empty_prompt(self) -> dict[str, torch.Tensor]:
        self.empty_calls += 1
        return {"emb": torch.zeros(3, 2)}

    def collate_text(self, items):
        return {"emb": torch.stack([i["emb"] for i in items])}


class Recorder:
    """An EventWriter stand-in that keeps events in a list."""

    def __init__(self):
        self.events: list[dict] = []

    def emit(self, type: str, **fields) -> dict:
        event = {"type": type, **fields}
        self.events.append(event)
        return event

    def logs(self, level: str | None = None) -> list[str]:
        return [e["message"] for e in self.events
                if e["type"] == "log" and (level is None or e["level"] == level)]
