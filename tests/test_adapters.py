"""Adapters on the tiny models: LoKr trains, saves, reloads and resumes exactly; LoRA exports load in diffusers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import demo_config, edit_config, train_config
from tuner.engine import adapters

LOKR = dict(model_type="lora", lora_type="lycoris", optimizer="adamw", mixed_precision="no")


def _small(config_dir: Path, size: int = 32) -> Path:
    """Train at `size` px (a quarter of the demo's tokens at 32): these tests need learning, not detail."""
    path = config_dir / "multidatabackend.json"
    datasets = json.loads(path.read_text())
    for dataset in datasets:
        if dataset.get("dataset_type", "image") == "image":
            dataset["resolution"] = size
    path.write_text(json.dumps(datasets, indent=2))
    edit_config(config_dir, resolution=size)
    return config_dir


def _transformer(tiny: Path):
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel.from_pretrained(tiny, subfolder="transformer").eval()


def _inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 6, 16, generator=g),
                encoder_attention_mask=torch.ones(2, 6), timestep=torch.tensor([300.0, 700.0]), return_dict=False)


def _lycoris_file(folder: Path, **settings) -> Path:
    path = folder / "lycoris.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"algo": "lokr", "factor": 4, "linear_dim": 10000, "linear_alpha": 1,
                                "apply_preset": {"target_module": ["Attention"]}, **settings}))
    return path


@pytest.mark.parametrize("dim", [10000, 2])
def test_lokr_layer_is_base_plus_kronecker_delta(dim):
    torch.manual_seed(0)
    base = torch.nn.Linear(24, 40)
    layer = adapters.LoKrLinear(base, factor=4, dim=dim, alpha=1.0)
    with torch.no_grad():
        for p in layer.parameters(recurse=False):
            p.normal_()
    x = torch.randn(3, 5, 24)
    expected = base(x) + x @ layer.delta_weight().T
    assert torch.allclose(layer(x), expected, atol=1e-4)
    assert layer.delta_weight().shape == (40, 24)
    assert layer.full_w2 == (dim == 10000)
    # LyCORIS: full factors mean scale 1, a split w2 means alpha / dim
    assert layer.scale == (1.0 if dim == 10000 else 0.5)


def test_factorization_matches_lycoris():
    assert adapters.factorization(2240, 16) == (16, 140)
    assert adapters.factorization(64, 16) == (4, 16)
    assert adapters.factorization(1152, 8) == (8, 144)
    assert adapters.factorization(100, 16) == (10, 10)  # no divisor equal to 16: the nearest split


def test_lokr_starts_as_the_identity_and_only_it_trains(tiny_sana):
    model = _transformer(tiny_sana)
    before = model(**_inputs())[0]
    adapters.add_lokr(model, adapters.read_lycoris_config(None))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lokr_" in n for n in trainable)
    assert len({n.rsplit(".", 1)[0] for n in trainable}) == 16  # 2 blocks × 2 attentions × q, k, v, out
    assert torch.equal(model(**_inputs())[0], before)


def test_lokr_trains_saves_and_reloads_with_identical_outputs(tmp_path, tiny_sana):
    lyco = _lycoris_file(tmp_path)
    config = _small(demo_config(tmp_path, tiny_sana, images=4, max_train_steps=60, train_batch_size=4,
                                learning_rate=3e-3, flow_use_uniform_schedule=False, lycoris_config=str(lyco), **LOKR))
    result = train_config(config, tmp_path / "job")
    losses = [loss for _, loss in result.losses]
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert end < 0.75 * start, f"LoKr did not learn: first 10 steps {start:.3f}, last 10 {end:.3f}"

    out = result.pipeline
    assert sorted(p.name for p in out.iterdir()) == ["README.md", adapters.LOKR_CONFIG, adapters.LOKR_WEIGHTS]
    assert json.loads((out / adapters.LOKR_CONFIG).read_text())["factor"] == 4
    keys = load_file(str(out / adapters.LOKR_WEIGHTS))
    assert "lycoris_transformer_blocks_0_attn1_to_q.lokr_w1" in keys
    assert "lycoris_transformer_blocks_1_attn2_to_out_0.alpha" in keys
    # The checkpoint holds the adapter only, under names a resume finds again.
    ckpt = load_file(str(result.checkpoint / "trainable.safetensors"))
    assert ckpt and all(".lokr_" in k for k in ckpt)

    trained = _transformer(tiny_sana)
    adapters.add_lokr(trained, adapters.read_lycoris_config(lyco))
    from tuner.engine.train.checkpoint import load_trainable_state
    load_trainable_state(trained, ckpt)
    reloaded = adapters.load_lokr(_transformer(tiny_sana), out)
    base = _transformer(tiny_sana)
    with torch.no_grad():
        expected, got, untouched = (m(**_inputs(1))[0] for m in (trained, reloaded, base))
    assert torch.equal(got, expected)
    assert not torch.allclose(got, untouched), "the saved LoKr changes nothing"


def test_lokr_resume_continues_exactly(tmp_path, tiny_sana):
    opts = dict(max_train_steps=8, caption_dropout_probability=0.3, use_ema=True, **LOKR)
    full = train_config(_small(demo_config(tmp_path / "a", tiny_sana, **opts)), tmp_path / "a" / "job").losses
    split = _small(demo_config(tmp_path / "b", tiny_sana, **opts))
    first = train_config(split, tmp_path / "b" / "job", stop_after=4)
    assert first.stopped and first.step == 4
    edit_config(split, resume_from_checkpoint="latest")
    second = train_config(split, tmp_path / "b" / "job")
    assert [s for s, _ in second.losses] == list(range(5, 9))
    for (step, expected), (_, got) in zip(full[4:], second.losses):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"step {step} differs after resume"


def test_lora_on_tiny_sana_exports_for_diffusers_and_comfyui(tmp_path, tiny_sana):
    from diffusers import SanaPipeline

    from tuner.engine.config import TrainConfig

    cfg = TrainConfig(lora_rank=4, lora_alpha=2.0, lora_dropout=0.0)
    model = adapters.add_lora(_transformer(tiny_sana), cfg, "sana")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
        adapted = model(**_inputs())[0]
    files = adapters.export_lora(model, SanaPipeline, tmp_path / "lora")
    assert all(f.is_file() for f in files)

    pipe = SanaPipeline.from_pretrained(tiny_sana)
    with torch.no_grad():
        plain = pipe.transformer(**_inputs())[0]
    pipe.load_lora_weights(tmp_path / "lora")
    with torch.no_grad():
        loaded = pipe.transformer(**_inputs())[0]
    assert not torch.allclose(plain, adapted)
    assert torch.allclose(loaded, adapted, atol=1e-5), "diffusers loaded a different LoRA (alpha lost?)"

    comfy = load_file(str(tmp_path / "lora" / adapters.COMFY_WEIGHTS))
    prefix = "lora_transformer_transformer_blocks_0_attn1_to_out_0"
    assert comfy[f"{prefix}.lora_down.weight"].shape == (4, 64)
    assert comfy[f"{prefix}.lora_up.weight"].shape == (64, 4)
    assert float(comfy[f"{prefix}.alpha"]) == 2.0
    assert len(comfy) == 3 * 16


def test_lora_target_modules_are_configurable_and_checked(tiny_sana):
    from tuner.engine.config import TrainConfig

    cfg = TrainConfig(lora_rank=2, lora_dropout=0.0, peft_lora_target_modules=["to_q"])
    model = adapters.add_lora(_transformer(tiny_sana), cfg, "sana")
    wrapped = {n.split(".lora_")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert wrapped == {f"transformer_blocks.{b}.attn{a}.to_q" for b in (0, 1) for a in (1, 2)}
    cfg.peft_lora_target_modules = ["to_qq"]
    with pytest.raises(ValueError, match="peft_lora_target_modules"):
        adapters.add_lora(_transformer(tiny_sana), cfg, "sana")


def test_unknown_lycoris_algo_names_the_fix(tmp_path):
    path = _lycoris_file(tmp_path, algo="loha")
    with pytest.raises(ValueError, match='"algo": "lokr"'):
        adapters.read_lycoris_config(path)


@pytest.mark.parametrize("precision", ["no_change", "int8-quanto"])
def test_sd3_lora_trains_and_loads_through_stable_diffusion_3_pipeline(tmp_path, tiny_sd3, precision):
    from diffusers import StableDiffusion3Pipeline

    config = demo_config(tmp_path, tiny_sd3, model_family="sd3", model_type="lora", lora_type="standard",
                         lora_rank=4, base_model_precision=precision, optimizer="adamw", mixed_precision="no",
                         learning_rate=1e-2, max_train_steps=3)
    result = train_config(config, tmp_path / "job")
    assert result.step == 3
    out = result.pipeline
    assert {adapters.LORA_WEIGHTS, adapters.COMFY_WEIGHTS} <= {p.name for p in out.iterdir()}
    keys = load_file(str(out / adapters.LORA_WEIGHTS))
    assert any(k.startswith("transformer.") and "add_q_proj.lora_A" in k for k in keys), sorted(keys)[:4]
    comfy = load_file(str(out / adapters.COMFY_WEIGHTS))
    assert "lora_transformer_transformer_blocks_0_attn_to_add_out.lora_up.weight" in comfy

    def image(pipe):
        return torch.tensor(list(pipe("a red circle", num_inference_steps=2, height=64, width=64, guidance_scale=1.0,
                                      generator=torch.Generator().manual_seed(0), output_type="np").images[0].flat))

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_sd3)
    pipe.set_progress_bar_config(disable=True)
    before = image(pipe)
    pipe.load_lora_weights(out)
    after = image(pipe)
    assert not torch.allclose(before, after, atol=1e-4), "the trained LoRA does not change the image"


def test_lokr_on_sd3_wraps_both_streams_and_reloads_identically(tmp_path, tiny_sd3):
    from diffusers import SD3Transformer2DModel

    def transformer():
        return SD3Transformer2DModel.from_pretrained(tiny_sd3, subfolder="transformer").eval()

    def run(model):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return model(hidden_states=torch.randn(1, 4, 8, 8, generator=g),
                         encoder_hidden_states=torch.randn(1, 5, 48, generator=g),
                         pooled_projections=torch.randn(1, 40, generator=g), timestep=torch.tensor([500.0]),
                         return_dict=False)[0]

    model = adapters.add_lokr(transformer(), adapters.read_lycoris_config(None))
    wrapped = {n for n, m in model.named_modules() if isinstance(m, adapters.LoKrLinear)}
    assert "transformer_blocks.0.attn.add_q_proj" in wrapped and "transformer_blocks.1.attn.to_q" in wrapped
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lokr_w2" in name:
                param.normal_(std=0.05)
    adapters.save_lokr(model, tmp_path / "lokr")
    reloaded = adapters.load_lokr(transformer(), tmp_path / "lokr")
    assert torch.equal(run(reloaded), run(model))
    assert not torch.allclose(run(reloaded), run(transformer()))


def test_lycoris_targets_that_match_nothing_are_reported(tiny_sana, caplog):
    config = adapters.read_lycoris_config(None)
    config["apply_preset"] = {"target_module": ["Attention", "FeedForward"]}
    with caplog.at_level("WARNING", logger="tuner.engine.adapters"):
        adapters.add_lokr(_transformer(tiny_sana), config)
    assert any("FeedForward" in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)
