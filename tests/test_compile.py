"""torch.compile through SimpleTuner's dynamo_* keys: a compiled run trains like the eager one, and its
checkpoints and export are the same model (compiling in place renames nothing)."""
from __future__ import annotations

import pytest
from safetensors.torch import load_file

from engine_fixtures import demo_config, events_of, train_config

STEPS = 4
LR = 1e-3


def trained(tmp_path, tiny_sana, name: str, **compile_keys):
    config = demo_config(tmp_path / name, tiny_sana, max_train_steps=STEPS, optimizer="adamw", learning_rate=LR,
                         **compile_keys)
    job = tmp_path / name / "job"
    result = train_config(config, job)
    weights = load_file(tmp_path / name / "output" / "pipeline" / "transformer" / "diffusion_pytorch_model.safetensors")
    logs = [e["message"] for e in events_of(job, "log")]
    return [loss for _, loss in result.losses], weights, logs


def test_inductor_compiles_each_block_once_and_trains_like_eager(tmp_path, tiny_sana):
    eager_losses, eager_weights, _ = trained(tmp_path, tiny_sana, "eager")
    losses, weights, logs = trained(tmp_path, tiny_sana, "inductor", dynamo_backend="inductor")
    assert any(m.startswith("compiling ") and "SanaTransformerBlock blocks (backend inductor)" in m for m in logs), logs
    assert len(losses) == STEPS
    assert losses == pytest.approx(eager_losses, rel=1e-3, abs=1e-5)
    # The same parameter names (no _orig_mod. prefixes), and the same weights to compiler rounding: Adam
    # moves every weight by about LR a step whatever its gradient's size, so a near-zero gradient that
    # rounds differently may move a weight differently, but by less than half a step over the run.
    assert weights.keys() == eager_weights.keys()
    for name, tensor in weights.items():
        assert (tensor - eager_weights[name]).abs().max() < LR / 2, name


def test_whole_model_compile_with_the_eager_backend_is_the_eager_run(tmp_path, tiny_sana):
    eager_losses, eager_weights, _ = trained(tmp_path, tiny_sana, "eager")
    losses, weights, logs = trained(tmp_path, tiny_sana, "whole", dynamo_backend="eager",
                                    dynamo_use_regional_compilation=False)
    assert "compiling the whole transformer (backend eager) on the first step" in logs
    assert losses == pytest.approx(eager_losses, rel=1e-6, abs=1e-7)
    assert all((weights[n] - eager_weights[n]).abs().max() < 1e-6 for n in weights)
