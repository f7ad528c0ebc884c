"""FSDP2 (`fsdp_enable`): full-rank training with the model sharded over the processes.

torch's own `fully_shard` wraps each transformer block (the family card's `blocks`, or
`fsdp_transformer_layer_cls_to_wrap`) and then the whole model, so each process keeps 1/N of the
weights, gradients, optimizer state and EMA; a block's weights are gathered for its forward and
backward only. Called directly rather than through accelerate's FSDP plugin, which engages on
CUDA launches only: this way the same code shards on GPUs (NCCL) and on CPU processes (gloo).

With fsdp_cpu_ram_efficient_loading only the main process reads the base weights; the others
start from an empty model and receive their shards from it (shard_from_main).

Checkpoints hold the sharded state in torch's distributed checkpoint format (`sharded/`), which
loads on any number of processes; the export gathers the full weights on the main process into
an ordinary diffusers folder. Validation runs on the main process on such a gathered copy.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

SHARDED = "sharded"   # the checkpoint's subfolder of distributed-checkpoint files


def enabled(cfg: Any, num_processes: int) -> bool:
    return bool(cfg.fsdp_enable) and num_processes > 1


def block_classes(cfg: Any) -> list[str]:
    given = cfg.fsdp_transformer_layer_cls_to_wrap
    if given:  # SimpleTuner (accelerate) takes a comma-separated string
        return [n.strip() for n in given.split(",") if n.strip()] if isinstance(given, str) else list(given)
    return list(cfg.family.blocks)


def shard(model: nn.Module, cfg: Any, device: torch.device) -> nn.Module:
    """fully_shard each block, then the root, over all processes; returns the same (now sharded) model."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    names = block_classes(cfg)
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        present = sorted({type(m).__name__ for m in model.modules() if "Block" in type(m).__name__})
        raise ValueError(f"config.json: fsdp_transformer_layer_cls_to_wrap: {names} name no module of the "
                         f"{cfg.model_family} transformer; its blocks are {present}")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # Weights are already in the training dtype (bf16 runs train bf16 weights); gradients are
    # reduced in fp32 so the average over processes loses nothing.
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float32)
    reshard = bool(cfg.fsdp_reshard_after_forward)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    return model


def shard_from_main(load: Callable[[bool], nn.Module], cfg: Any, device: torch.device) -> nn.Module:
    """fsdp_cpu_ram_efficient_loading: only the main process reads the base weights (`load(False)`);
    the others build the model empty (`load(True)`: weights on the meta device), and once sharded
    each receives its own shards from the main process. A machine then holds one copy of the
    weights in RAM instead of one per process."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    main = dist.get_rank() == 0
    model = load(not main)
    full = model.state_dict() if main else {}
    # Buffers are computed at construction on every process (Sana Video's rotary tables are not
    # even saved): kept across to_empty, which leaves every tensor uninitialised.
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    shard(model, cfg, device)
    if not main:
        model.to_empty(device=device)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def syncing(accelerator: Any, model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Around a micro-batch's backward: gradients are averaged over the processes only when `sync`
    (the last micro-batch of an accumulated step). DDP's no_sync, or FSDP2's switch for the same."""
    if sync:
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    return accelerator.no_sync(model)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (the tensor itself when it is not sharded).

    Asked of the tensor rather than by isinstance(DTensor): the EMA calls this for every weight at
    every update, and unsharded runs never import torch.distributed.tensor."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def local_sizes(model: nn.Module) -> tuple[int, int]:
    """(elements this process holds, elements of the whole model)."""
    return sum(local(p).numel() for p in model.parameters()), sum(p.numel() for p in model.parameters())


def describe(model: nn.Module, processes: int) -> str:
    held, whole = local_sizes(model)
    return (f"FSDP2 over {processes} processes: each holds about 1/{processes} of the transformer's "
            f"{whole:,} weights (this one {held:,}), with their gradients, optimizer state and EMA")


def whole(norm: torch.Tensor) -> torch.Tensor:
    """The whole model's gradient norm as a plain tensor (clip_grad_norm_ of a sharded model returns a
    DTensor over the shards); nothing waits for it."""
    from torch.distributed.tensor import DTensor

    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU of the main process ({} on the others); a collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def gathered_copy(model: nn.Module, family: Any, device: torch.device) -> nn.Module | None:
    """An unsharded copy of the model on the main process (None elsewhere), for validation and export;
    every process must call it."""
    import torch.distributed as dist

    weights = full_weights(model)
    if dist.get_rank() != 0:
        return None
    copy = family.load_transformer()
    copy.load_state_dict(weights)
    dtype = next(iter(weights.values())).dtype
    return copy.to(device, dtype).eval()


class _CopiedEMA:
    """The EMA weights, gathered, for an unsharded copy: what Validator and the export swap in."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        self.weights = weights

    @contextlib.contextmanager
    def swapped_into(self, model: nn.Module) -> Iterator[nn.Module]:
        trained = {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}
        model.load_state_dict(self.weights)
        try:
            yield model
        finally:
            model.load_state_dict(trained)


@contextlib.contextmanager
def main_view(model: nn.Module, family: Any, ema: Any, sharded: bool) -> Iterator[tuple[nn.Module | None, Any]]:
    """(the model, its EMA) as the main process validates and exports them: the trained model and
    EMA themselves, or under FSDP unsharded copies gathered from every process (None on the others,
    which must enter this too: gathering is a collective)."""
    if not sharded:
        yield model, ema
        return
    import torch.distributed as dist

    copy = gathered_copy(model, family, family.device)
    ema_weights = None
    if ema is not None:
        with ema.swapped_into(model):
            ema_weights = full_weights(model)
    if dist.get_rank() != 0:
        yield None, None
        return
    try:
        yield copy, (_CopiedEMA(ema_weights) if ema is not None else None)
    finally:
        del copy, ema_weights


def _state(model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds torch's
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    if ema is not None:
        state["ema"] = ema.sharded_state(model)
    return state


def save(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any) -> None:
    """Every process writes its shards of the weights, optimizer state and EMA to `folder`/sharded."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_state(model, optimizer, ema), checkpoint_id=str(Path(folder) / SHARDED))


def load(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: Any) -> None:
    """Read the shards back, resharded to however many processes run now."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _state(model, optimizer, ema)
    dcp.load(state, checkpoint_id=str(Path(folder) / SHARDED))
    set_state_dict(model, getattr(optimizer, "optimizer", optimizer),
                   model_state_dict=state["model"], optim_state_dict=state["optim"])
    if ema is not None:
        ema.load_sharded_state(state["ema"])


def is_sharded_checkpoint(folder: Path) -> bool:
    return (Path(folder) / SHARDED).is_dir()
