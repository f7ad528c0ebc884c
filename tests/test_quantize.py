"""Quantised bases on the tiny Sana: every precision trains an adapter, text encoders quantise, rules refuse the rest."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import demo_config
from tuner.engine import adapters
from tuner.engine.config import TrainConfig, check_bundle, load_bundle
from tuner.engine.events import EventWriter
from tuner.engine.jobdir import EVENTS
from tuner.engine.quantize import quantize_model, weight_bytes
from tuner.engine.train.control import Control
from tuner.engine.train.loop import train

PRECISIONS = ["int8-quanto", "int4-quanto", "int2-quanto", "fp8-quanto", "nf4-bnb"]


def _transformer(tiny: Path):
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel.from_pretrained(tiny, subfolder="transformer")


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 6, 16, generator=g),
                encoder_attention_mask=torch.ones(2, 6), timestep=torch.tensor([300.0, 700.0]), return_dict=False)


def _layer_type(precision: str) -> str:
    return "Linear4bit" if precision == "nf4-bnb" else "QLinear"


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_trains_lokr_three_steps_with_finite_loss(tmp_path, tiny_sana, precision):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=3, model_type="lora", lora_type="lycoris",
                         base_model_precision=precision, optimizer="adamw", mixed_precision="no",
                         quantize_via="cpu")
    job = tmp_path / "job"
    job.mkdir()
    result = train(load_bundle(config), events=EventWriter(job / EVENTS), control=Control(job),
                   preview_dir=job / "previews")
    assert [s for s, _ in result.losses] == [1, 2, 3]
    assert all(math.isfinite(loss) for _, loss in result.losses), result.losses
    print(f"{precision}: step {sum(result.step_seconds[1:]) / max(1, len(result.step_seconds) - 1):.3f} s")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_quantised_base_shrinks_and_lora_trains_on_top(tiny_sana, precision):
    model = _transformer(tiny_sana)
    full_bytes = weight_bytes(model)
    with torch.no_grad():
        reference = model(**_inputs())[0]
    quantize_model(model, precision, device="cpu", via="cpu")
    assert type(model.transformer_blocks[0].attn1.to_q).__name__ == _layer_type(precision)
    assert type(model.proj_out) is torch.nn.Linear, "the output projection must stay in full precision"
    assert weight_bytes(model) < full_bytes
    cfg = TrainConfig(lora_rank=4, lora_dropout=0.0)
    adapters.add_lora(model, cfg, "sana")
    out = model(**_inputs())[0]
    # quantisation error stays modest (int2 is coarse), and LoRA starts as the identity
    assert (out - reference).abs().mean() < 0.5 * reference.abs().mean()
    out.float().pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(".lora_" in n for n in grads)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_text_encoder_precision_quantises_gemma_and_keeps_embeddings_close(tiny_sana):
    from tuner.engine.models.sana import SanaFamily

    def family(precision: str) -> SanaFamily:
        cfg = TrainConfig(pretrained_model_name_or_path=str(tiny_sana), text_encoder_1_precision=precision,
                          quantize_via="cpu")
        return SanaFamily(cfg, torch.device("cpu"), torch.float32)

    plain, quantised = family("no_change"), family("int8-quanto")
    prompts = ["a red circle on a white background"]
    a = plain.encode_prompts(prompts)[0]["prompt_embeds"]
    b = quantised.encode_prompts(prompts)[0]["prompt_embeds"]
    assert any(type(m).__name__ == "QLinear" for m in quantised.text_encoder.modules())
    assert not any(type(m).__name__ == "QLinear" for m in plain.text_encoder.modules())
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98


def test_unknown_precision_and_quantize_via_name_the_key(tiny_sana):
    with pytest.raises(ValueError, match="text_encoder_2_precision"):
        quantize_model(torch.nn.Linear(4, 4), "int3-quanto", device="cpu", key="text_encoder_2_precision")
    with pytest.raises(ValueError, match="quantize_via"):
        quantize_model(torch.nn.Linear(4, 4), "int8-quanto", device="cpu", via="gpu")


@pytest.mark.parametrize("overrides, key, words", [
    (dict(model_type="full", base_model_precision="int8-quanto"), "base_model_precision", "model_type: lora"),
    (dict(model_type="full", base_model_precision="nf4-bnb"), "base_model_precision", "no_change"),
    (dict(optimizer="adamw_bf16", mixed_precision="no"), "optimizer", "mixed_precision: bf16"),
])
def test_rules_refuse_what_cannot_train(tmp_path, tiny_sana, overrides, key, words):
    config = demo_config(tmp_path, tiny_sana, **overrides)
    issues = [i for i in check_bundle(config) if i.level == "error"]
    assert any(i.key == key and words in i.message for i in issues), [str(i) for i in issues]


def test_fp8_is_refused_on_gpus_older_than_ada(tmp_path, tiny_sana):
    from tuner.engine.hardware import describe

    config = demo_config(tmp_path, tiny_sana, model_type="lora", lora_type="lycoris",
                         base_model_precision="fp8-quanto")
    old_gpu = describe(24, 1, bf16=True)
    issues = [str(i) for i in check_bundle(config, hardware=old_gpu) if i.level == "error"]
    assert any("fp8-quanto needs compute capability 8.9" in i for i in issues), issues


@pytest.mark.parametrize("precision, optimizer", [("int8-quanto", "adamw_bf16"), ("nf4-bnb", "bnb-lion8bit-paged")])
def test_bf16_recipes_of_the_presets_run_with_bf16_adapters(tmp_path, tiny_sana, precision, optimizer):
    # The GPU presets' dtype path (bf16 weights, quantised base, bf16 adapter) on the CPU.
    config = demo_config(tmp_path, tiny_sana, max_train_steps=2, model_type="lora", lora_type="lycoris",
                         base_model_precision=precision, optimizer=optimizer, mixed_precision="bf16")
    job = tmp_path / "job"
    job.mkdir()
    result = train(load_bundle(config), events=EventWriter(job / EVENTS), control=Control(job),
                   preview_dir=job / "previews")
    assert result.step == 2 and all(math.isfinite(loss) for _, loss in result.losses)
    weights = load_file(str(result.pipeline / adapters.LOKR_WEIGHTS))
    assert {t.dtype for k, t in weights.items() if ".lokr_" in k} == {torch.bfloat16}
