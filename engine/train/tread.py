"""TREAD token routing (tread_config, SimpleTuner's format): during training a random share of the
image tokens skips a span of transformer blocks and rejoins, in its own place, after the span.

    "tread_config": {"routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": -2}]}

`selection_ratio` is the share of tokens routed past blocks start..end (inclusive; negative
indices count from the last block). Fewer tokens through those blocks make the step cheaper;
the routed tokens come back as they entered, so the loss still covers every token.

How the tokens are chosen follows the family's blocks:
- SD3's joint attention sees tokens as a set (positions are added before the first block), so any
  subset may go on: a random subset, kept in order.
- Sana's and Sana Video's feed-forward convolves over the token grid, so what goes on must stay a
  grid: a random set of rows and of columns (of every frame), whose crossings go on as a smaller
  grid. The blocks of the span are told its height and width, and get the matching rows of the
  per-token inputs the transformer hands every block (Sana Video's rotary embedding, and its
  per-token timesteps when training image-to-video).

It is written as forward hooks, so diffusers' models run unchanged: a hook on the transformer
draws the selection once per training forward (from the loop's noise generator, on the GPU when
training there, so a resume draws the same), a hook before the first routed block keeps the chosen tokens and holds all of them, and a
hook after the last one puts the chosen tokens back among the held ones. Gradient checkpointing's
recomputation runs the block hooks again with the same selection, so it recomputes the same thing.
Validation never routes: the hooks act only in training mode with gradients on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Where a block's arguments sit, positionally as the transformers call them (keywords otherwise).
# Sana: (hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, timestep, height, width)
# Sana Video: (…, timestep, frames, height, width, rotary_emb)
GRID_ARGS = {"sana": {"timestep": 4, "height": 5, "width": 6},
             "sanavideo": {"timestep": 4, "height": 6, "width": 7, "rotary_emb": 8}}
SET_FAMILIES = {"sd3"}         # blocks that see a set of tokens: route any subset


@dataclass(frozen=True)
class Route:
    ratio: float
    start: int
    end: int


def routes_of(tread_config: dict[str, Any], blocks: int) -> list[Route]:
    """The routes with block indices resolved; ValueError (naming config.json: tread_config) when one cannot be."""
    routes = []
    for n, given in enumerate(tread_config.get("routes") or [], 1):
        start, end = (int(given[k]) + (blocks if int(given[k]) < 0 else 0)
                      for k in ("start_layer_idx", "end_layer_idx"))
        if not 0 <= start <= end < blocks:
            raise ValueError(f"config.json: tread_config: route {n} spans blocks {given['start_layer_idx']}.."
                             f"{given['end_layer_idx']}, which is not a span of this model's {blocks} blocks (0.."
                             f"{blocks - 1}, or negative from the end); give start_layer_idx <= end_layer_idx within them")
        routes.append(Route(float(given["selection_ratio"]), start, end))
    routes.sort(key=lambda r: r.start)
    for a, b in zip(routes, routes[1:]):
        if b.start <= a.end:
            raise ValueError(f"config.json: tread_config: routes over blocks {a.start}..{a.end} and {b.start}..{b.end} "
                             "overlap; give each route its own span")
    return routes


class TokenRouter:
    """Routes tokens of `model` (the diffusers transformer, possibly wrapped) past each route's blocks."""

    def __init__(self, model: nn.Module, family: str, tread_config: dict[str, Any], generator: torch.Generator):
        if family not in GRID_ARGS.keys() | SET_FAMILIES:
            raise ValueError(f"config.json: tread_config: token routing is not built for {family} yet; remove "
                             "tread_config")
        self.places = GRID_ARGS.get(family)   # None: SD3, a set of tokens
        self.generator = generator
        self.transformer = next(m for m in model.modules() if isinstance(getattr(m, "transformer_blocks", None),
                                                                          nn.ModuleList))
        blocks = self.transformer.transformer_blocks
        self.routes = routes_of(tread_config, len(blocks))
        self.active = False
        self.grid: tuple[int, ...] = ()                        # this forward's token grid: (frames,) rows, columns
        self.chosen: dict[int, torch.Tensor] = {}              # route start → the tokens going on (flat indices)
        self.kept_grid: dict[int, tuple[int, int]] = {}        # route start → their rows and columns (grid families)
        self.held: dict[int, torch.Tensor] = {}                # route start → all tokens, as they entered the route
        self.transformer.register_forward_pre_hook(self._draw, with_kwargs=True)
        for route in self.routes:
            blocks[route.start].register_forward_pre_hook(self._enter(route), with_kwargs=True)
            if self.places:   # the transformer hands every block the full grid: those after the first get the smaller
                for index in range(route.start + 1, route.end + 1):
                    blocks[index].register_forward_pre_hook(self._resize(route), with_kwargs=True)
            blocks[route.end].register_forward_hook(self._leave(route), with_kwargs=True)

    def describe(self) -> str:
        spans = ", ".join(f"{r.ratio:.0%} of the tokens past blocks {r.start}..{r.end}" for r in self.routes)
        return f"tread_config: routing {spans} ({'rows and columns' if self.places else 'tokens'}), in training only"

    # --- hooks ---------------------------------------------------------------------------------
    def _draw(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Once per forward of the transformer: route when training with gradients, and choose what goes on."""
        self.active = module.training and torch.is_grad_enabled()
        if not self.active:
            return
        latents = args[0] if args else kwargs["hidden_states"]
        patch = self.transformer.config.patch_size
        patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
        self.grid = tuple(n // p for n, p in zip(latents.shape[-len(patch):], patch))
        device = latents.device
        tokens = math.prod(self.grid)
        for route in self.routes:
            keep = 1.0 - route.ratio
            if not self.places:
                self.chosen[route.start] = self._subset(tokens, max(1, round(tokens * keep)), device)
                continue
            rows, cols = self.grid[-2:]
            h, w = (max(1, round(n * math.sqrt(keep))) for n in (rows, cols))
            on_rows, on_cols = self._subset(rows, h, device), self._subset(cols, w, device)
            frames = torch.arange(tokens // (rows * cols), device=device)
            # The flat index of (frame, row, column), frame-major as the blocks unflatten them.
            index = (frames[:, None, None] * rows + on_rows[None, :, None]) * cols + on_cols[None, None, :]
            self.chosen[route.start], self.kept_grid[route.start] = index.flatten(), (h, w)

    def _subset(self, n: int, k: int, device: torch.device) -> torch.Tensor:
        """k of range(n), drawn at random and kept in order."""
        return torch.randperm(n, generator=self.generator, device=self.generator.device)[:k].sort().values.to(device)

    def _narrow(self, args: list, kwargs: dict, route: Route, tokens: int) -> None:
        """A grid family's block arguments for the routed tokens: the smaller height and width, and the
        chosen rows of every per-token input (rotary embedding, per-token timesteps)."""
        chosen = self.chosen[route.start]
        h, w = self.kept_grid[route.start]

        def put(name: str, value: Any) -> None:
            where = self.places[name]
            if len(args) > where:
                args[where] = value
            else:
                kwargs[name] = value

        def get(name: str) -> Any:
            where = self.places.get(name)
            return args[where] if where is not None and len(args) > where else kwargs.get(name)

        put("height", h)
        put("width", w)
        timestep = get("timestep")
        if isinstance(timestep, torch.Tensor) and timestep.dim() == 3 and timestep.shape[1] == tokens:
            put("timestep", timestep.index_select(1, chosen))
        if "rotary_emb" in self.places and get("rotary_emb") is not None:
            put("rotary_emb", tuple(part.index_select(1, chosen) for part in get("rotary_emb")))

    def _enter(self, route: Route):
        def hook(block: nn.Module, args: tuple, kwargs: dict):
            if not self.active:
                return None
            args, kwargs = list(args), dict(kwargs)
            tokens = args[0] if args else kwargs["hidden_states"]
            self.held[route.start] = tokens
            kept = tokens.index_select(1, self.chosen[route.start])
            if args:
                args[0] = kept
            else:
                kwargs["hidden_states"] = kept
            if self.places:
                self._narrow(args, kwargs, route, tokens.shape[1])
            return tuple(args), kwargs
        return hook

    def _resize(self, route: Route):
        def hook(block: nn.Module, args: tuple, kwargs: dict):
            if not self.active:
                return None
            args, kwargs = list(args), dict(kwargs)
            self._narrow(args, kwargs, route, self.held[route.start].shape[1])
            return tuple(args), kwargs
        return hook

    def _leave(self, route: Route):
        def hook(block: nn.Module, args: tuple, kwargs: dict, output: Any):
            if not self.active:
                return None
            # SD3's blocks return (encoder_hidden_states, hidden_states); Sana's the hidden states.
            kept = output[1] if isinstance(output, tuple) else output
            joined = self.held[route.start].clone()
            joined[:, self.chosen[route.start]] = kept
            return (output[0], joined) if isinstance(output, tuple) else joined
        return hook
