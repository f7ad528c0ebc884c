"""Validation sampling: the main prompt and the prompt library at each resolution, with preview
frames every `validation_preview_steps` sampling steps. Runs on the main process only."""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tuner.engine.config.io import nickname_file_name
from tuner.engine.data.video import frame_strip, write_video
from tuner.engine.events import EventWriter
from tuner.engine.train.metrics import Samples

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig
    from tuner.engine.models.base import ModelFamily

MAIN_NICKNAME = "validation"


@dataclass
class ValidationPrompt:
    nickname: str
    prompt: str


def validation_prompts(cfg: TrainConfig, library: dict[str, str]) -> list[ValidationPrompt]:
    """The main validation_prompt first, then the user's prompt library, in file order."""
    prompts = []
    if cfg.validation_prompt:
        prompts.append(ValidationPrompt(MAIN_NICKNAME, cfg.validation_prompt))
    prompts += [ValidationPrompt(nickname_file_name(nick), text) for nick, text in library.items()]
    return prompts


def all_prompt_texts(cfg: TrainConfig, library: dict[str, str]) -> list[str]:
    """Every text validation needs embeddings for (cached before the text encoders go away)."""
    texts = [p.prompt for p in validation_prompts(cfg, library)]
    texts.append(cfg.validation_negative_prompt)
    return texts


class Validator:
    """Generates validation images (and previews) for the current weights."""

    def __init__(self, cfg: TrainConfig, family: ModelFamily, library: dict[str, str], text_for, *,
                 output_dir: Path, preview_dir: Path, events: EventWriter):
        self.cfg = cfg
        self.family = family
        self.prompts = validation_prompts(cfg, library)
        self.resolutions = cfg.validation_resolutions()
        texts = text_for([p.prompt for p in self.prompts] + [cfg.validation_negative_prompt])
        self.text = dict(zip((p.nickname for p in self.prompts), texts[:-1]))
        self.negative = texts[-1]
        self.output_dir = output_dir
        self.preview_dir = preview_dir
        self.events = events

    @property
    def enabled(self) -> bool:
        return bool(self.prompts) and not self.cfg.validation_disable

    def due(self, step: int) -> bool:
        interval = self.cfg.validation_step_interval
        return self.enabled and bool(interval) and step % interval == 0

    def run(self, model: torch.nn.Module, step: int, ema: Any = None) -> Iterator[Samples]:
        """Sample every prompt at every resolution with the weights `ema_validation` asks for,
        handing each prompt's files over as soon as they are written."""
        mode = self.cfg.ema_validation if ema is not None else "none"
        variants: list[tuple[str, Any]] = []
        if mode in ("none", "comparison"):
            variants.append(("", contextlib.nullcontext(model)))
        if mode in ("ema_only", "comparison"):
            variants.append(("_ema", ema.swapped_into(model)))
        for suffix, weights in variants:
            with weights as m:
                yield from self._sample_all(m, step, suffix)

    def _sample_all(self, model: torch.nn.Module, step: int, suffix: str) -> Iterator[Samples]:
        cfg = self.cfg
        folder = self.output_dir / "validation_images" / f"step-{step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        steps = int(cfg.validation_num_inference_steps)
        every = cfg.validation_preview_steps if cfg.validation_preview else 0
        seed = cfg.validation_seed if cfg.validation_seed is not None else (cfg.seed or 0)
        for prompt in self.prompts:
            paths, stills = [], []
            for (width, height), n in itertools.product(self.resolutions, range(cfg.num_validation_images)):
                # num_validation_images: the n-th sample of a prompt and size draws from seed + n.
                name = f"{prompt.nickname}{suffix}-{width}x{height}" + (f"-{n + 1}" if n else "")
                on_step = self._preview_callback(prompt, name, step, every) if every and not n else None
                images = self.family.generate(
                    model, self.text[prompt.nickname], self.negative, width, height, steps,
                    float(cfg.validation_guidance), int(seed) + n, on_step=on_step,
                )
                if cfg.family.video:
                    # A video family returns the frames of one clip: an mp4 plus a still strip to glance at.
                    path = write_video(folder / f"{name}.mp4", images, self.family.framerate)
                    stills.append(folder / f"{name}-strip.png")
                    frame_strip(images).save(stills[-1])
                else:
                    path = folder / f"{name}.png"
                    images[0].save(path)
                paths.append(path)
            yield Samples(prompt.nickname + suffix, prompt.prompt, paths, stills)

    def _preview_callback(self, prompt: ValidationPrompt, name: str, step: int, every: int):
        folder = self.preview_dir / f"step-{step:06d}"

        def on_step(k: int, n: int, latents: torch.Tensor) -> None:
            if k % every and k != n:
                return
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}-{k:03d}of{n:03d}.png"
            self.family.decode_preview(latents).save(path)
            self.events.emit("preview", prompt=prompt.prompt, nickname=prompt.nickname, k=k, n=n,
                             step=step, path=str(path))

        return on_step
