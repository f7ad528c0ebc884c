"""Exponential moving average of the trained weights, kept in fp32 on the CPU or the accelerator."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


class EMA:
    """Shadow copies of a model's trainable parameters, updated every `interval` optimizer steps."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.995, interval: int = 1, device: str | torch.device = "cpu"):
        self.decay = decay
        self.interval = max(1, int(interval))
        self.device = torch.device(device)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: params[n].detach().to(self.device, torch.float32).clone() for n in self.names}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> bool:
        """Fold the current weights in when `step` falls on the interval; True when it did."""
        if step % self.interval:
            return False
        params = dict(model.named_parameters())
        for name in self.names:
            shadow = self.shadow[name]
            shadow.lerp_(params[name].detach().to(self.device, torch.float32), 1 - self.decay)
        return True

    @contextlib.contextmanager
    def swapped_into(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Use the EMA weights inside the block (validation, export); the trained ones come back after."""
        params = dict(model.named_parameters())
        saved = {n: params[n].detach().clone() for n in self.names}
        try:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(self.shadow[n].to(params[n].device, params[n].dtype))
            yield model
        finally:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(saved[n])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            self.shadow[n] = state[f"ema.{n}"].to(self.device, torch.float32).clone()
