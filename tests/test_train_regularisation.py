"""Regularisation datasets (is_regularisation_data): an adapter learns to leave those images as its base makes them."""
from __future__ import annotations

import json

import pytest
import torch

from engine_fixtures import demo_config, train_config
from tuner.engine import adapters


def mark_regularisation(config_dir) -> None:
    path = config_dir / "multidatabackend.json"
    datasets = json.loads(path.read_text())
    for ds in datasets:
        if ds.get("dataset_type", "image") == "image":
            ds["is_regularisation_data"] = True
    path.write_text(json.dumps(datasets))


@pytest.mark.parametrize("lora_type", ["lycoris", "standard"])
def test_an_adapter_is_trained_towards_the_base_models_own_prediction(tmp_path, tiny_sana, tiny_sd3, lora_type):
    # The adapter starts as the identity, so on regularisation images its first prediction equals the
    # base model's: the loss against that prior is zero, where the flow target gives the usual loss.
    family = dict(model_family="sana", lora_type="lycoris") if lora_type == "lycoris" else \
        dict(model_family="sd3", lora_type="standard", lora_rank=4, optimizer="adamw", mixed_precision="no")
    model = tiny_sana if lora_type == "lycoris" else tiny_sd3
    plain = demo_config(tmp_path / "plain", model, model_type="lora", max_train_steps=2, resolution=32,
                        images=4, seed=3, **family)
    prior = demo_config(tmp_path / "prior", model, model_type="lora", max_train_steps=2, resolution=32,
                        images=4, seed=3, **family)
    mark_regularisation(prior)
    ordinary = train_config(plain, tmp_path / "plain-job").losses
    preserved = train_config(prior, tmp_path / "prior-job").losses
    assert ordinary[0][1] > 0.1
    assert preserved[0][1] < 1e-6
    assert preserved[1][1] < ordinary[1][1] / 100


def test_adapters_off_gives_the_base_model_back_and_restores_the_adapter(tiny_sana):
    from diffusers import SanaTransformer2DModel

    model = SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer").requires_grad_(False)
    linear = model.transformer_blocks[0].attn1.to_q
    x = torch.randn(2, linear.in_features)
    base = linear(x)
    adapters.add_lokr(model, adapters.read_lycoris_config(None))
    lokr = model.transformer_blocks[0].attn1.to_q
    with torch.no_grad():
        lokr.lokr_w2.fill_(0.5)
        assert not torch.allclose(lokr(x), base)
        with adapters.adapters_off(model):
            assert torch.allclose(lokr(x), base)
        assert not torch.allclose(lokr(x), base)
