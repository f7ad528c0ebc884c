"""Every optimizer name trains, takes its optimizer_config, and resumes from a checkpoint with identical state."""
from __future__ import annotations

import logging

import pytest
import torch

from tuner.engine.config import TrainConfig
from tuner.engine.train import checkpoint
from tuner.engine.train.optim import make_optimizer, make_scheduler

# Each with settings users put in optimizer_config for it.
OPTIMIZERS = {
    "bnb-adamw8bit": "beta2=0.99,weight_decay=0.01",
    "bnb-lion8bit-paged": "beta1=0.95,weight_decay=0.1",
    "optimi-lion": "beta1=0.95,weight_decay=0.1",
    "optimi-stableadamw": "eps=1e-6",
    "prodigy": "d_coef=0.5,use_bias_correction=true,safeguard_warmup=true",
    "adamw_bf16": None,
    "adamw": None,
}


def _cfg(name: str, extra: str | None) -> TrainConfig:
    lr = 1.0 if name == "prodigy" else 1e-3
    # optimizer_config as users write it in config.json; TrainConfig parses it into a dict.
    return TrainConfig(optimizer=name, optimizer_config=extra, learning_rate=lr, lr_scheduler="cosine",
                       lr_warmup_steps=1)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # 128 × 64 weights pass bitsandbytes' 4096-element threshold for 8-bit state.
    return torch.nn.Sequential(torch.nn.Linear(128, 64), torch.nn.GELU(), torch.nn.Linear(64, 4))


def _steps(model, optimizer, scheduler, start: int, count: int) -> None:
    for step in range(start, start + count):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(16, 128, generator=g), torch.randn(16, 4, generator=g)
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


def _flat_state(optimizer) -> dict:
    tensors, meta = checkpoint._split_optimizer(optimizer.state_dict())
    return {"tensors": tensors, "meta": meta}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_trains_and_resumes_with_identical_state(tmp_path, name):
    cfg = _cfg(name, OPTIMIZERS[name])
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer, total_steps=10)
    _steps(model, optimizer, scheduler, 0, 3)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters())), f"{name} did not update"

    tmp = checkpoint.begin(tmp_path, 3)
    checkpoint.write_main(tmp, model=model, optimizer=optimizer, scheduler=scheduler, ema=None, state={"step": 3})
    generator = torch.Generator()
    checkpoint.write_rank(tmp, 0, generator)
    saved = checkpoint.commit(tmp, tmp_path, 3, None)

    resumed = _model(seed=1)
    resumed_opt = make_optimizer(cfg, resumed.parameters())
    resumed_sched = make_scheduler(cfg, resumed_opt, total_steps=10)
    checkpoint.load(saved, model=resumed, optimizer=resumed_opt, scheduler=resumed_sched, ema=None,
                    generator=generator, rank=0)
    original, restored = _flat_state(optimizer), _flat_state(resumed_opt)
    assert original["meta"] == restored["meta"]
    assert original["tensors"].keys() == restored["tensors"].keys()
    for key, tensor in original["tensors"].items():
        assert torch.equal(tensor, restored["tensors"][key]), f"{name}: {key} changed through the checkpoint"

    _steps(model, optimizer, scheduler, 3, 3)
    _steps(resumed, resumed_opt, resumed_sched, 3, 3)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{name}: training after resume differs from training straight through"


def test_bnb_state_is_eight_bit_and_survives_the_flat_files():
    model = _model()
    optimizer = make_optimizer(_cfg("bnb-adamw8bit", None), model.parameters())
    _steps(model, optimizer, make_scheduler(_cfg("bnb-adamw8bit", None), optimizer, 10), 0, 1)
    tensors, _ = checkpoint._split_optimizer(optimizer.state_dict())
    eight_bit = [k for k, t in tensors.items() if t.dtype == torch.uint8]
    assert eight_bit, sorted(tensors)
    assert all("/" in k for k in eight_bit), "bitsandbytes' nested quant state should be flattened with '/'"


def test_paged_lion_on_cpu_says_it_runs_unpaged(caplog):
    if torch.cuda.is_available():
        pytest.skip("paging works on CUDA; the fallback note is for CPU-only machines")
    with caplog.at_level(logging.WARNING, logger="tuner.engine.train.optim"):
        make_optimizer(_cfg("bnb-lion8bit-paged", None), _model().parameters())
    assert any("unpaged" in r.message for r in caplog.records)


def test_optimizer_config_reaches_the_optimizer():
    lion = make_optimizer(_cfg("optimi-lion", "beta1=0.95,weight_decay=0.1"), _model().parameters())
    group = lion.param_groups[0]
    assert (group["beta1"], group["beta2"], group["weight_decay"]) == (0.95, 0.99, 0.1)  # Lion's beta2 default
    prodigy = make_optimizer(_cfg("prodigy", "d_coef=0.5"), _model().parameters())
    assert prodigy.param_groups[0]["d_coef"] == 0.5


def test_unknown_optimizer_config_key_names_the_key():
    with pytest.raises(ValueError, match="optimizer_config.*bogus"):
        make_optimizer(_cfg("optimi-stableadamw", "bogus=1"), _model().parameters())


def test_polynomial_schedule_decays_to_lr_end_with_lr_power():
    def lrs(**keys) -> list[float]:
        cfg = TrainConfig(learning_rate=1e-3, lr_scheduler="polynomial", **keys)
        optimizer = make_optimizer(cfg, _model().parameters())
        scheduler = make_scheduler(cfg, optimizer, total_steps=10)
        seen = []
        for _ in range(10):
            optimizer.step()
            scheduler.step()
            seen.append(scheduler.get_last_lr()[0])
        return seen

    given = lrs(lr_end=1e-5, lr_power=2.0)
    assert given[4] == pytest.approx((1e-3 - 1e-5) * 0.5 ** 2 + 1e-5)
    assert given[-1] == pytest.approx(1e-5)
    assert lrs(lr_end=0.0)[-1] == 0.0  # 0 means decay to nothing, not some fallback
    # Unset, the config's own defaults apply (lr_end 4e-7, lr_power 0.8), not another set of fallbacks.
    assert lrs()[4] == pytest.approx((1e-3 - 4e-7) * 0.5 ** 0.8 + 4e-7)
