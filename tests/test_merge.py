"""`tuner merge`: a trained LoRA or LoKr folded into a full diffusers folder that plain diffusers loads
and that computes what the base with the adapter computes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tuner.engine import adapters

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    return dict(hidden_states=torch.randn(2, 4, 8, 8, generator=g),
                encoder_hidden_states=torch.randn(2, 6, 16, generator=g),
                encoder_attention_mask=torch.ones(2, 6), timestep=torch.tensor([300.0, 700.0]), return_dict=False)


def _transformer(tiny: Path):
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel.from_pretrained(tiny, subfolder="transformer").eval()


def _trained_lora(tiny: Path, folder: Path) -> torch.Tensor:
    """A LoRA as a run exports it (its up weights no longer zero); returns the adapted model's output."""
    from diffusers import SanaPipeline

    from tuner.engine.config import TrainConfig

    model = adapters.add_lora(_transformer(tiny), TrainConfig(lora_rank=4, lora_alpha=2.0, lora_dropout=0.0), "sana")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
        out = model(**_inputs())[0]
    adapters.export_lora(model, SanaPipeline, folder)
    return out


def _trained_lokr(tiny: Path, folder: Path) -> torch.Tensor:
    config = {"algo": "lokr", "factor": 4, "linear_dim": 2, "linear_alpha": 1,
              "apply_preset": {"target_module": ["Attention"]}}
    model = adapters.add_lokr(_transformer(tiny), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lokr_w2_b" in name:
                param.normal_(std=0.5)
        out = model(**_inputs())[0]
    adapters.save_lokr(model, folder)
    return out


def merged_output(folder: Path) -> torch.Tensor:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder)  # plain diffusers, no adapter anywhere
    assert not any("lora" in n or "lokr" in n for n, _ in pipe.transformer.named_parameters())
    with torch.no_grad():
        return pipe.transformer.eval()(**_inputs())[0]


@pytest.mark.parametrize("kind", ["lora", "lokr"])
def test_a_merged_adapter_computes_what_the_base_with_the_adapter_computes(tmp_path, tiny_sana, kind):
    from tuner.engine.merge import merge

    adapted = (_trained_lora if kind == "lora" else _trained_lokr)(tiny_sana, tmp_path / "adapter")
    with torch.no_grad():
        plain = _transformer(tiny_sana)(**_inputs())[0]
    out = merge(tmp_path / "adapter", tiny_sana, tmp_path / "merged")
    merged = merged_output(out)
    assert not torch.allclose(plain, adapted, atol=1e-3)
    assert torch.allclose(merged, adapted, atol=1e-4), (merged - adapted).abs().max()
    assert json.loads((out / "merged_from.json").read_text())["kind"] == kind
    # Everything else is the base's own: the merged folder stands alone.
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        assert (out / part).is_dir()


def test_tuner_merge_takes_a_runs_output_folder_and_its_base(tmp_path, tiny_sana):
    run = tmp_path / "run"
    adapted = _trained_lora(tiny_sana, run / "pipeline")
    (run / "config.json").write_text(json.dumps({"pretrained_model_name_or_path": str(tiny_sana)}))
    done = subprocess.run([sys.executable, "-m", "tuner.engine.cli", "merge", str(run), str(tmp_path / "merged"),
                           "--dtype", "fp32"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "DiffusionPipeline.from_pretrained" in done.stdout
    assert torch.allclose(merged_output(tmp_path / "merged"), adapted, atol=1e-4)


@pytest.mark.parametrize("given,says", [
    ("empty", "no pytorch_lora_weights.safetensors (a LoRA) and no lycoris_weights.safetensors"),
    ("base", "not a diffusers pipeline folder"),
    ("out", "is not empty; give a new folder"),
])
def test_merge_inputs_that_cannot_work_say_what_to_give(tmp_path, tiny_sana, given, says):
    adapter = tmp_path / "adapter"
    if given != "empty":
        _trained_lora(tiny_sana, adapter)
    adapter.mkdir(exist_ok=True)
    base = tmp_path / "nothing" if given == "base" else tiny_sana
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "out"
    if given == "out":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "tuner.engine.cli", "merge", str(adapter), "--into", str(base),
                           str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and says in done.stderr, done.stderr
    if given == "out":
        assert (out / "keep.txt").read_text() == "mine"


def test_a_lokr_read_by_its_lycoris_key_names_alone_reproduces_the_trained_model(tmp_path, tiny_sana):
    # As ComfyUI or the lycoris library read the file: every `lycoris_<module path, dots as
    # underscores>` names a layer whose weight grows by kron(w1, w2_a @ w2_b) · alpha / rank.
    from safetensors.torch import load_file

    adapted = _trained_lokr(tiny_sana, tmp_path / "adapter")
    state = load_file(str(tmp_path / "adapter" / adapters.LOKR_WEIGHTS))
    model = _transformer(tiny_sana)
    layers = {"lycoris_" + name.replace(".", "_"): module for name, module in model.named_modules()}
    prefixes = {key.rsplit(".", 1)[0] for key in state}
    with torch.no_grad():
        for prefix in prefixes:
            w2 = state.get(f"{prefix}.lokr_w2")
            rank = None
            if w2 is None:
                w2 = state[f"{prefix}.lokr_w2_a"] @ state[f"{prefix}.lokr_w2_b"]
                rank = state[f"{prefix}.lokr_w2_b"].shape[0]
            scale = float(state[f"{prefix}.alpha"]) / rank if rank else 1.0
            layers[prefix].weight += torch.kron(state[f"{prefix}.lokr_w1"], w2) * scale
        read = model(**_inputs())[0]
    assert len(prefixes) == 16  # q, k, v, out of both attentions in each of the two blocks
    assert torch.allclose(read, adapted, atol=1e-4), (read - adapted).abs().max()
