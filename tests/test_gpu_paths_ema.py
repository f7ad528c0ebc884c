"""The EMA: one foreach lerp on the accelerator, or a background fold from a snapshot on the CPU; both
give the same weights as the textbook update, and a checkpoint or a swap never sees half an update."""
from __future__ import annotations

import time

import pytest
import torch

from tuner.engine.train import ema as ema_module
from tuner.engine.train.ema import EMA


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    model[0].bias.requires_grad_(False)  # frozen parameters have no shadow
    return model.to(torch.bfloat16)


def _train_and_average(background: bool, steps: int = 6) -> tuple[dict, dict]:
    """EMA over `steps` fake optimizer steps; the weights change right after each update, as the next step would.

    background=False is the path an EMA on a CUDA device takes (one foreach lerp), here on the CPU."""
    model = _model()
    ema = EMA(model, decay=0.9, device="cpu")
    ema.background = background
    expected = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    for step in range(1, steps + 1):
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.1)
        assert ema.update(model, step)
        for n, p in model.named_parameters():
            if n in expected:
                expected[n] = expected[n] * 0.9 + p.detach().float() * 0.1
        with torch.no_grad():  # the next optimizer step, while a background fold may still be running
            for p in model.parameters():
                p.mul_(3.0)
            for p in model.parameters():
                p.div_(3.0)
    return {k[4:]: v for k, v in ema.state_dict().items()}, expected


@pytest.mark.parametrize("background", [False, True], ids=["accelerator-foreach", "cpu-background"])
def test_both_emas_match_the_textbook_update(background):
    shadow, expected = _train_and_average(background)
    assert shadow.keys() == expected.keys() and "0.bias" not in shadow
    for name in expected:
        torch.testing.assert_close(shadow[name], expected[name], rtol=1e-5, atol=1e-6)


def test_the_cpu_fold_runs_beside_the_step_and_state_waits_for_it(monkeypatch):
    model = _model()
    ema = EMA(model, decay=0.5, device="cpu")
    assert not ema.background  # weights on the CPU fold inline, on the step's own cores
    ema.background = True      # the path a CPU EMA of GPU weights takes
    started = []
    fold = EMA._fold

    def slow_fold(self, landed):
        started.append(time.monotonic())
        time.sleep(0.3)
        fold(self, landed)

    monkeypatch.setattr(EMA, "_fold", slow_fold)
    with torch.no_grad():
        model[2].weight.fill_(1.0)
    before = time.monotonic()
    ema.update(model, 1)
    returned = time.monotonic()
    with torch.no_grad():
        model[2].weight.fill_(100.0)  # the next step changes the weights while the fold is in flight
    assert returned - before < 0.25, "update waited for the fold instead of overlapping it"
    state = ema.state_dict()  # waits for the fold
    assert started
    # the fold used the snapshot taken at update time (1.0), not the weights changed after it
    reference = EMA(_model(), decay=0.5, device="cpu").shadow["2.weight"] * 0.5 + 0.5
    torch.testing.assert_close(state["ema.2.weight"], reference)


def test_chunked_foreach_equals_one_chunk(monkeypatch):
    whole, _ = _train_and_average(background=False)
    monkeypatch.setattr(ema_module, "CHUNK_ELEMENTS", 100)
    chunked, _ = _train_and_average(background=False)
    for name in whole:
        assert torch.equal(whole[name], chunked[name])


def test_interval_and_swap_restore_the_trained_weights_exactly():
    model = _model()
    ema = EMA(model, decay=0.9, interval=3, device="cpu")
    assert [ema.update(model, s) for s in range(1, 7)] == [False, False, True, False, False, True]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.swapped_into(model):
        assert torch.equal(model[2].weight, ema.shadow["2.weight"].to(torch.bfloat16))
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())


def test_two_processes_keep_one_ema_on_the_main_process_and_export_it(tmp_path, tiny_sana):
    from engine_fixtures import copy_config_into, demo_config, events_of, launch_two_processes
    from safetensors.torch import load_file

    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, train_batch_size=2, checkpoint_step_interval=2,
                         use_ema=True, ema_device="cpu", ema_update_interval=1)
    job = copy_config_into(config, tmp_path / "job")
    proc = launch_two_processes(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert events_of(job, "status")[-1]["phase"] == "done"
    output = tmp_path / "output"
    assert (output / "pipeline-ema" / "transformer").is_dir()
    shadow = load_file(str(output / "checkpoint-4" / "ema.safetensors"))
    assert shadow and all(t.dtype == torch.float32 for t in shadow.values())
