"""Exponential moving average of the trained weights, in fp32, kept by the main process only
(under FSDP by every process, each for its own shards of the weights).

- On the accelerator (ema_device: accelerator, the default): one foreach lerp over all shadows per
  update, in chunks so the fp32 view of bf16 weights never costs more than a chunk; no host sync.
- On the CPU (ema_device: cpu, when the GPU has no room for an fp32 copy): each update copies the
  GPU's weights into pinned host buffers without blocking, and a worker thread folds them into the
  shadows once the copies have landed, while the next step runs (weights trained on the CPU fold
  in inline, on the step's own cores). The next update, a checkpoint,
  validation or export waits for the fold in flight first.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from tuner.engine.train.sharding import local

# Elements per foreach chunk: bounds the transient fp32 copies of low-precision weights (256 MB).
CHUNK_ELEMENTS = 64 << 20


def _chunks(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    chunk, size = [], 0
    for pair in pairs:
        chunk.append(pair)
        size += pair[0].numel()
        if size >= CHUNK_ELEMENTS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _lerp(shadows: list[torch.Tensor], values: list[torch.Tensor], weight: float) -> None:
    """shadow += weight · (value − shadow) for every pair, as foreach kernels, chunk by chunk."""
    for chunk in _chunks(list(zip(shadows, values))):
        torch._foreach_lerp_([s for s, _ in chunk], [v.to(s.device, torch.float32) for s, v in chunk], weight)


class EMA:
    """Shadow copies of a model's trainable parameters, updated every `interval` optimizer steps."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.995, interval: int = 1, device: str | torch.device = "cpu"):
        self.decay = decay
        self.interval = max(1, int(interval))
        self.device = torch.device(device)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow = {n: local(params[n].detach()).to(self.device, torch.float32).clone() for n in self.names}
        # CPU shadows of weights held on a GPU fold in the background. Weights on the CPU fold inline:
        # a worker there only competes with the step for the same cores (a Sana Video block on 2 cores,
        # EMA every 2 steps: steps 2-6 took 2.49 s on average with the worker, 2.06 s inline) and needs
        # a staging copy of every weight besides.
        self.background = self.device.type == "cpu" and any(params[n].device.type != "cpu" for n in self.names)
        self._staging: dict[str, torch.Tensor] = {}
        self._pending: Future | None = None
        self._worker: ThreadPoolExecutor | None = None   # started on the first background fold

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> bool:
        """Fold the current weights in when `step` falls on the interval; True when it did (or started to)."""
        if step % self.interval:
            return False
        params = {n: local(p.detach()) for n, p in model.named_parameters()}
        if not self.background:
            _lerp([self.shadow[n] for n in self.names], [params[n] for n in self.names], 1 - self.decay)
            return True
        self.wait()  # the staging buffers are free again
        landed = None
        for name in self.names:
            param = params[name]
            buffer = self._staging.get(name)
            if buffer is None or buffer.dtype != param.dtype:
                buffer = self._staging[name] = torch.empty(param.shape, dtype=param.dtype, device="cpu",
                                                           pin_memory=param.is_cuda)
            # Ordered before the next optimizer step on the same stream, so it reads this step's weights.
            buffer.copy_(param, non_blocking=param.is_cuda)
        if any(params[n].is_cuda for n in self.names):
            landed = torch.cuda.Event()
            landed.record()
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ema")
        self._pending = self._worker.submit(self._fold, landed)
        return True

    @torch.no_grad()
    def _fold(self, landed: torch.cuda.Event | None) -> None:
        if landed is not None:
            landed.synchronize()
        _lerp([self.shadow[n] for n in self.names], [self._staging[n] for n in self.names], 1 - self.decay)

    def wait(self) -> None:
        """Return once the update in flight (CPU EMA) has been folded in; its error, if any, is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    @contextlib.contextmanager
    def swapped_into(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Use the EMA weights inside the block (validation, export); the trained ones come back after.

        The trained weights wait in RAM meanwhile, so validation needs no second copy on the GPU."""
        self.wait()
        params = {n: local(p) for n, p in model.named_parameters()}
        saved = {n: params[n].detach().to("cpu", copy=True) for n in self.names}
        try:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(self.shadow[n].to(params[n].device, params[n].dtype))
            yield model
        finally:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(saved[n].to(params[n].device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.wait()
        return {f"ema.{n}": t for n, t in self.shadow.items()}

    def sharded_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The shadows as sharded tensors laid out like the model's weights (FSDP checkpoints)."""
        from torch.distributed.tensor import DTensor

        self.wait()
        params = dict(model.named_parameters())
        return {n: DTensor.from_local(self.shadow[n], params[n].device_mesh, params[n].placements,
                                      shape=params[n].shape, stride=params[n].stride()) for n in self.names}

    def load_sharded_state(self, state: dict[str, torch.Tensor]) -> None:
        for n in self.names:
            self.shadow[n].copy_(local(state[n]))

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.wait()
        for n in self.names:
            self.shadow[n] = state[f"ema.{n}"].to(self.device, torch.float32).clone()
