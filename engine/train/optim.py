"""Optimizer and learning-rate scheduler factories, by the names users put in config.json."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from diffusers.optimization import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)

if TYPE_CHECKING:
    from tuner.engine.config import TrainConfig

log = logging.getLogger(__name__)


def make_optimizer(cfg: TrainConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named by cfg.optimizer, with cfg's betas/decay/eps and optimizer_config on top."""
    params = [p for p in params if p.requires_grad]
    name = cfg.optimizer
    try:
        return _make(cfg, name, params)
    except TypeError as exc:
        # An unknown optimizer_config key reaches the constructor as an unexpected keyword.
        raise ValueError(f"config.json: optimizer_config: {exc} — not a setting of {name!r}; remove it or check "
                         "the optimizer's documentation for its names") from exc


def _make(cfg: TrainConfig, name: str, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    extra = dict(cfg.optimizer_config or {})  # a copy: the keys taken below must stay in the config
    beta2 = cfg.adam_beta2
    if "lion" in name and "adam_beta2" not in cfg.model_fields_set:
        beta2 = 0.99  # Lion's own default; AdamW's 0.999 makes its sign updates too sluggish
    betas = (extra.pop("beta1", cfg.adam_beta1), extra.pop("beta2", beta2))
    weight_decay = extra.pop("weight_decay", cfg.adam_weight_decay)
    eps = extra.pop("eps", cfg.adam_epsilon)
    lr = cfg.learning_rate

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, **extra)

    import optimi

    if name in ("optimi-adamw", "adamw_bf16"):
        # adamw_bf16 trains bf16 weights directly; Kahan-compensated updates keep small steps
        # from rounding away (plain AdamW on bf16 weights stalls).
        kahan = True if name == "adamw_bf16" else extra.pop("kahan_sum", None)
        return optimi.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, kahan_sum=kahan, **extra)
    if name == "optimi-stableadamw":
        return optimi.StableAdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, **extra)
    if name == "optimi-lion":
        return optimi.Lion(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)
    if name in ("bnb-adamw8bit", "bnb-lion8bit-paged"):
        import bitsandbytes as bnb

        if name == "bnb-adamw8bit":
            return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, **extra)
        if not torch.cuda.is_available():
            log.warning("optimizer: bnb-lion8bit-paged pages its state through CUDA unified memory; without CUDA "
                        "bitsandbytes runs it as plain (unpaged) Lion8bit")
        return bnb.optim.PagedLion8bit(params, lr=lr, betas=betas, weight_decay=weight_decay, **extra)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError as exc:
            raise RuntimeError("config.json: optimizer: 'prodigy' needs the prodigyopt package: pip install prodigyopt") from exc
        # Prodigy finds the step size itself: learning_rate is a multiplier (1.0 is usual), d_coef scales it.
        extra.setdefault("d_coef", 1.0)
        return Prodigy(params, lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, **extra)
    raise ValueError(f"config.json: optimizer: {name!r} is not supported by this engine")


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule named by cfg.lr_scheduler over `total_steps` optimizer steps."""
    name = cfg.lr_scheduler
    warmup = cfg.lr_warmup_steps
    if name == "constant":
        return get_constant_schedule(optimizer)
    if name == "constant_with_warmup":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if name == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps, num_cycles=0.5)
    if name == "cosine_with_restarts":
        return get_cosine_with_hard_restarts_schedule_with_warmup(optimizer, warmup, total_steps,
                                                                  num_cycles=cfg.lr_num_cycles)
    if name == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if name == "polynomial":
        lr_end = cfg.lr_end
        if lr_end >= cfg.learning_rate:
            # diffusers refuses this combination; the user meant "decay to nearly nothing".
            lr_end = cfg.learning_rate * 1e-3
        return get_polynomial_decay_schedule_with_warmup(optimizer, warmup, total_steps, lr_end=lr_end, power=cfg.lr_power)
    raise ValueError(f"config.json: lr_scheduler: {name!r} is not supported by this engine")
