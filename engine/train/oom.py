"""Out of GPU memory: what the user is told instead of a traceback.

The message names the step and phase, the peak memory the run reached, and the settings that
lower it, in the order that costs the run least; the job ends failed and resumes from its latest
checkpoint once a setting is changed.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tuner.engine import checkpoints
from tuner.engine.config import TrainConfig
from tuner.engine.events import read_events


def peak_gib(device: torch.device) -> float | None:
    """The most memory the torch allocator held on `device` this run, in GiB (None off CUDA)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / (1 << 30)


def ways_to_fit(cfg: TrainConfig) -> list[str]:
    """The settings that would lower memory for this config, cheapest for the run first."""
    ways = []
    if not cfg.gradient_checkpointing:
        ways.append("gradient_checkpointing: true")
    elif cfg.gradient_checkpointing_interval and cfg.gradient_checkpointing_interval > 1:
        ways.append("remove gradient_checkpointing_interval (checkpoint every block)")
    if cfg.train_batch_size > 1:
        half = max(1, cfg.train_batch_size // 2)
        ways.append(f"train_batch_size: {half} with gradient_accumulation_steps: "
                    f"{cfg.gradient_accumulation_steps * cfg.train_batch_size // half} (the same effective batch)")
    if cfg.optimizer in ("adamw", "optimi-adamw", "optimi-stableadamw"):
        ways.append("optimizer: bnb-adamw8bit (8-bit optimizer state)")
    if cfg.model_type == "lora" and cfg.base_model_precision in ("no_change", "bf16", "fp16", "fp32"):
        ways.append("base_model_precision: int8-quanto (a quantised base for the adapter)")
    if cfg.model_type == "full":
        ways.append("model_type: lora with lora_type: lycoris (LoKr trains a fraction of the weights)")
    if cfg.use_ema and cfg.ema_device != "cpu":
        ways.append("ema_device: cpu (the EMA weights off the GPU)")
    ways.append("a lower resolution (or, for video, fewer num_frames)")
    ways.append("a preset of a lower memory tier: `tuner-tui` → Preset, or `tuner presets`")
    return ways


PHASES = {"loading": "loading the models", "caching": "caching latents and text embeddings",
          "training": "training", "saving": "saving", "validating": "making validation samples"}


def where_it_stopped(events_path: Path) -> tuple[int, str]:
    """The last step the run finished (as far as its events say) and the phase it was in."""
    step, phase = 0, "loading"
    for event in read_events(events_path):
        if event["type"] in ("progress", "checkpoint"):  # progress is throttled; a save names its step too
            step = max(step, int(event.get("step", step)))
        elif event["type"] == "status":
            phase = str(event.get("phase", phase))
    return step, phase


def message_for(cfg: TrainConfig, events_path: Path, output_dir: Path) -> str:
    """What an out-of-memory error of this run means and what to change."""
    step, phase = where_it_stopped(events_path)
    found = checkpoints.complete(output_dir)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return advice(cfg, step, PHASES.get(phase, phase), device, found[-1][1] if found else None)


def advice(cfg: TrainConfig, step: int, phase: str, device: torch.device, checkpoint: Path | None) -> str:
    """The whole message for an out-of-memory error at `step` during `phase`."""
    peak = peak_gib(device)
    where = f" ({peak:.1f} GiB at its peak)" if peak is not None else ""
    resume = (f"Then resume with resume_from_checkpoint: latest (from {checkpoint.name})" if checkpoint
              else "Then start again (no checkpoint was written yet)")
    return (f"out of GPU memory after step {step}, while {phase}{where}. To fit, change one of: "
            + "; ".join(ways_to_fit(cfg)) + f". {resume}.")
