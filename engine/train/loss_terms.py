"""Loss terms beside the flow-matching loss (CREPA today): what the loop needs from one.

The loop adds each term's loss to the flow loss of every micro-batch, trains the term's own
parameters with the model's, and saves and restores each term with the checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch


@dataclass
class LossInputs:
    """One micro-batch's forward pass, as the terms see it (all on the accelerator's device)."""

    latents: torch.Tensor          # clean latents
    noise: torch.Tensor
    sigmas: torch.Tensor           # (B,) noise levels in [0, 1]
    prediction: torch.Tensor       # the model's output for the noisy latents
    text: dict[str, torch.Tensor]  # the prompt embeddings the model saw (after caption dropout)


class LossTerm(Protocol):
    """A weighted loss added to the flow loss, with any parameters of its own."""

    name: str

    def parameters(self) -> list[torch.nn.Parameter]:
        """The term's own trainable parameters (they join the optimizer); [] when it has none."""

    def loss(self, inputs: LossInputs) -> torch.Tensor:
        """The term's weighted loss for the micro-batch whose forward pass just ran."""

    def save(self, folder: Path) -> None:
        """Write the term's state into a checkpoint folder being assembled."""

    def load(self, folder: Path) -> None:
        """Restore the state from a checkpoint folder (one written without this term leaves it fresh)."""
