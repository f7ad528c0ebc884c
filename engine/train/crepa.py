"""CREPA, a temporal regulariser against flicker for video training (off unless crepa_enabled).

The hidden states of transformer block `crepa_block_index` are captured with a forward hook,
projected by a small trainable head to the width of a frozen DINOv2 encoder, and pulled towards
the encoder's patch features of the clean frames: each latent frame towards its own frame and
towards its neighbours up to `crepa_adjacent_distance` away, neighbour k weighted by
exp(-|k| / crepa_adjacent_tau). The loss is 1 - cosine similarity, averaged over patches and
weighted frames, times `crepa_lambda`, and is added to the flow-matching loss (a LossTerm).

The clean frames come from decoding the batch's latents with the family's VAE (the cache holds
latents, not pixels); for 81-frame 480p clips that decode is the main cost of turning CREPA on.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from tuner.engine.models.common import unwrap
from tuner.engine.train.loss_terms import LossInputs

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig
    from tuner.engine.models.base import VideoFamily

HEAD_FILE = "crepa_head.safetensors"
HF_IDS = {"dinov2_vits14": "facebook/dinov2-small", "dinov2_vitb14": "facebook/dinov2-base",
          "dinov2_vitl14": "facebook/dinov2-large", "dinov2_vitg14": "facebook/dinov2-giant"}
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DINOv2's ImageNet normalisation


class EncoderMissing(RuntimeError):
    """The CREPA encoder's weights are not on this machine; the message says where we looked."""


class FrameEncoder(torch.nn.Module):
    """A frozen DINOv2 (torch.hub or transformers) as frames (N, 3, S, S) in [0, 1] → (N, gh, gw, D)."""

    def __init__(self, model: torch.nn.Module, image_size: int):
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        config = getattr(model, "config", None)
        self.dim = int(config.hidden_size if config is not None else model.embed_dim)
        self.patch = int(config.patch_size if config is not None else model.patch_size)
        self.image_size = int(image_size) // self.patch * self.patch
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        x = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False)
        dtype = next(self.model.parameters()).dtype
        x = ((x - self.mean) / self.std).to(dtype)
        if hasattr(self.model, "forward_features"):  # torch.hub DINOv2
            tokens = self.model.forward_features(x)["x_norm_patchtokens"]
        else:  # transformers Dinov2Model: the first token is CLS
            tokens = self.model(pixel_values=x).last_hidden_state[:, 1:]
        grid = size // self.patch
        return tokens[:, -grid * grid:].float().reshape(len(x), grid, grid, -1)


def load_encoder(name: str, image_size: int, device: torch.device, dtype: torch.dtype) -> FrameEncoder:
    """DINOv2 from the torch.hub cache, else from the Hugging Face cache; EncoderMissing when neither has it."""
    hub_dir = Path(torch.hub.get_dir())
    repo = hub_dir / "facebookresearch_dinov2_main"
    weights = hub_dir / "checkpoints" / f"{name}_pretrain.pth"
    if repo.is_dir() and weights.is_file():
        model = torch.hub.load(str(repo), name, source="local", pretrained=True)
        return FrameEncoder(model.to(device, dtype), image_size)
    hf_id = HF_IDS[name]
    from transformers import Dinov2Model

    try:
        model = Dinov2Model.from_pretrained(hf_id, torch_dtype=dtype,
                                            local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    except OSError as e:
        raise EncoderMissing(
            f"CREPA encoder {name!r} not found: looked for the torch.hub copy ({repo} with {weights}) and "
            f"for {hf_id!r} in the Hugging Face cache. Fetch it once with network access: "
            f"`huggingface-cli download {hf_id}` (or python -c \"import torch; "
            f"torch.hub.load('facebookresearch/dinov2', '{name}')\"), or set crepa_enabled: false. ({e.__class__.__name__})"
        ) from e
    return FrameEncoder(model.to(device), image_size)


def _average_across_processes(param: torch.nn.Parameter) -> None:
    torch.distributed.all_reduce(param.grad)
    param.grad /= torch.distributed.get_world_size()


class CREPA:
    """The hook, the projection head and the loss; `parameters()` go to the optimizer, `save`/`load` to checkpoints."""

    name = "crepa"

    def __init__(self, cfg: TrainConfig, family: VideoFamily, model: torch.nn.Module, device: torch.device,
                 encoder: FrameEncoder | None = None):
        blocks = unwrap(model).transformer_blocks
        index = int(cfg.crepa_block_index)
        if not 0 <= index < len(blocks):
            raise ValueError(f"config.json: crepa_block_index {index} is not a block of this model "
                             f"({len(blocks)} blocks); use 0..{len(blocks) - 1}")
        self.cfg, self.family, self.device = cfg, family, torch.device(device)
        self.encoder = encoder or load_encoder(cfg.crepa_encoder, cfg.crepa_encoder_image_size, device,
                                               family.weight_dtype)
        self.encoder.to(device)
        config = unwrap(model).config
        width = int(config.num_attention_heads * config.attention_head_dim)
        self.patch = tuple(config.patch_size)
        # A head of its own, trained with the model: the block's features need not live in DINOv2's space.
        # Its first values come from the run's seed, not the per-rank one the loop has set by now.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed if cfg.seed is not None else 0)
            self.head = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.SiLU(),
                                            torch.nn.Linear(width, self.encoder.dim)).to(device)
        self._hidden: torch.Tensor | None = None
        self._handle = blocks[index].register_forward_hook(self._capture)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # The head lives outside the DDP-wrapped model, so it does here what DDP does for the model:
            # every process starts from rank 0's head, and gradients are averaged after each backward
            # (averaging each micro-batch's sum again is still the average under gradient accumulation).
            for param in self.head.parameters():
                torch.distributed.broadcast(param.data, src=0)
                param.register_post_accumulate_grad_hook(_average_across_processes)

    def _capture(self, _module, _inputs, output) -> None:
        # Only training forwards: validation sampling runs under no_grad and needs nothing kept.
        if torch.is_grad_enabled():
            self._hidden = output[0] if isinstance(output, tuple) else output

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters())

    def loss(self, inputs: LossInputs) -> torch.Tensor:
        """λ × the alignment loss of the last training forward's captured block for the clean latents
        (B, C, f, h, w)."""
        latents = inputs.latents
        hidden, self._hidden = self._hidden, None
        if hidden is None:
            raise RuntimeError("CREPA found no captured hidden states: call it right after the model's forward")
        b, _, f, h, w = latents.shape
        pt, ph, pw = self.patch
        f, h, w = f // pt, h // ph, w // pw
        projected = self.head(hidden.float()).reshape(b, f, h, w, -1)
        target = self._targets(latents, f, h, w)                                  # (B, f, h, w, D)
        sims = F.cosine_similarity(projected.unsqueeze(2), target.unsqueeze(1), dim=-1).mean(dim=(-1, -2))
        weights = self._weights(f).to(sims)                                       # (f, f)
        value = ((1 - sims) * weights).sum(dim=(1, 2)) / weights.sum()
        return float(self.cfg.crepa_lambda) * value.mean()

    def _weights(self, f: int) -> torch.Tensor:
        """w[i, k] = exp(-|i-k| / tau) for |i-k| ≤ distance (1 on the diagonal), else 0."""
        idx = torch.arange(f)
        gap = (idx[:, None] - idx[None, :]).abs().float()
        weights = torch.exp(-gap / float(self.cfg.crepa_adjacent_tau))
        return weights * (gap <= int(self.cfg.crepa_adjacent_distance))

    @torch.no_grad()
    def _targets(self, latents: torch.Tensor, f: int, h: int, w: int) -> torch.Tensor:
        """Encoder features of the decoded clean frames, pooled per latent frame and resized to the token grid."""
        pixels = self.family.decode_latents(latents)                              # (B, 3, F, H, W)
        b, _, frames = pixels.shape[:3]
        flat = pixels.transpose(1, 2).reshape(b * frames, 3, *pixels.shape[3:])
        feats = self.encoder(((flat + 1) / 2).to(self.device))
        feats = feats.reshape(b, frames, *feats.shape[1:])                        # (B, F, gh, gw, D)
        # A causal VAE's latent frame 0 holds pixel frame 0; frame j ≥ 1 holds the next `t` frames.
        t = max(1, math.ceil((frames - 1) / max(1, f - 1))) if f > 1 else frames
        groups = [feats[:, :1]] + [feats[:, 1 + (j - 1) * t: 1 + j * t] for j in range(1, f)]
        pooled = torch.stack([g.mean(dim=1) for g in groups], dim=1)              # (B, f, gh, gw, D)
        grid = pooled.permute(0, 1, 4, 2, 3).reshape(b * f, -1, *pooled.shape[2:4])
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return grid.reshape(b, f, -1, h, w).permute(0, 1, 3, 4, 2)

    def save(self, folder: Path) -> None:
        """Write the head's weights into a checkpoint folder."""
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(Path(folder) / HEAD_FILE))

    def load(self, folder: Path) -> None:
        """Restore the head from a checkpoint (a checkpoint from a run without CREPA leaves it fresh)."""
        path = Path(folder) / HEAD_FILE
        if path.is_file():
            self.head.load_state_dict(load_file(str(path)))

    def close(self) -> None:
        self._handle.remove()
