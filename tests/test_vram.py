"""The VRAM estimate: torch-free, counts the tiny models right, moves the way memory does, fits every preset's tier;
and the multi-GPU presets it sizes run under accelerate launch on the tiny models."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuner.engine import vram
from tuner.presets import list_presets, load_preset
from tuner.presets.ranking import HEADROOM, estimated_gb

SD35_LARGE = {"model_family": "sd3", "model_type": "lora", "pretrained_model_name_or_path":
              "stabilityai/stable-diffusion-3.5-large", "resolution": 1024, "train_batch_size": 2,
              "gradient_checkpointing": True, "optimizer": "adamw_bf16", "mixed_precision": "bf16"}


def _training(config: dict) -> float:
    parts = vram.estimate(config)["parts"]
    return sum(v for k, v in parts.items() if not k.startswith("caching_"))


def test_estimator_does_not_import_torch():
    code = "import sys, tuner.engine.vram, tuner.presets.ranking; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("preset", [p for p in list_presets() if p.gpus > 0], ids=lambda p: p.name)
def test_every_shipped_preset_estimate_fits_its_tier(preset):
    estimate = estimated_gb(preset)
    assert vram.known_model(preset.config["pretrained_model_name_or_path"], preset.model_family), \
        "the preset names a model the estimator does not know, so ranking falls back to the header"
    print(f"{preset.name}: {estimate} GB of {preset.min_vram_gb:g} (header said {preset.estimated_vram_gb})")
    assert estimate <= HEADROOM * preset.min_vram_gb, vram.estimate(
        {"model_family": preset.model_family, "model_type": preset.model_type, **preset.config}, {"gpus": preset.gpus})


def test_counts_from_a_local_folder_match_the_tiny_model(tiny_sana):
    import torch  # noqa: F401  (the tiny model is loaded only to check the torch-free count)
    from diffusers import SanaTransformer2DModel

    real = sum(p.numel() for p in SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer").parameters())
    model = vram.model_from_folder(tiny_sana, "sana")
    assert model["params"] == real
    assert model["vae_factor"] == 2 and model["hidden"] == 64
    config = json.loads((tiny_sana / "transformer" / "config.json").read_text())
    assert vram.params_from_config(config) == pytest.approx(real, rel=0.05)


def test_config_count_matches_the_tiny_sd3(tiny_sd3):
    from diffusers import SD3Transformer2DModel

    real = sum(p.numel() for p in SD3Transformer2DModel.from_pretrained(tiny_sd3, subfolder="transformer").parameters())
    config = json.loads((tiny_sd3 / "transformer" / "config.json").read_text())
    assert vram.params_from_config(config) == pytest.approx(real, rel=0.1)


@pytest.mark.parametrize("lora_type", ["standard", "lycoris"])
def test_adapter_size_matches_what_adapters_build(tiny_sana, lora_type):
    from diffusers import SanaTransformer2DModel

    from tuner.engine import adapters

    model = SanaTransformer2DModel.from_pretrained(tiny_sana, subfolder="transformer")
    if lora_type == "lycoris":
        adapters.add_lokr(model, adapters.read_lycoris_config(None))
    else:
        adapters.add_lora(model, SimpleNamespace(lora_rank=4, lora_alpha=None, lora_dropout=0.0,
                                                 peft_lora_target_modules=None), "sana")
    built = sum(p.numel() for p in model.parameters() if p.requires_grad)
    config = {"model_type": "lora", "lora_type": lora_type, "lora_rank": 4}
    assert vram._trainable(vram.model_from_folder(tiny_sana, "sana"), config) == built


def test_estimate_moves_the_way_memory_does():
    base = _training(SD35_LARGE)
    assert _training({**SD35_LARGE, "base_model_precision": "int8-quanto"}) < base
    assert _training({**SD35_LARGE, "base_model_precision": "nf4-bnb"}) < \
        _training({**SD35_LARGE, "base_model_precision": "int8-quanto"})
    assert _training({**SD35_LARGE, "base_model_precision": "int2-quanto"}) < \
        _training({**SD35_LARGE, "base_model_precision": "nf4-bnb"})
    assert _training({**SD35_LARGE, "model_type": "full"}) > 3 * base
    assert _training({**SD35_LARGE, "gradient_checkpointing": False}) > base + 5
    assert _training({**SD35_LARGE, "train_batch_size": 4}) > base
    assert _training({**SD35_LARGE, "resolution": 512}) < base
    full = {**SD35_LARGE, "model_type": "full", "model_family": "sana", "pretrained_model_name_or_path": None}
    assert _training({**full, "optimizer": "bnb-adamw8bit"}) < _training(full)
    assert _training({**full, "optimizer": "bnb-lion8bit-paged"}) < _training({**full, "optimizer": "bnb-adamw8bit"})
    two_gpus = vram.estimate(full, {"gpus": 2})["parts"]
    assert two_gpus["ddp_buckets"] == pytest.approx(two_gpus["gradients"])


def test_text_encoders_count_only_while_caching():
    cached = vram.estimate({**SD35_LARGE, "text_encoder_3_precision": "int8-quanto"})["parts"]
    plain = vram.estimate(SD35_LARGE)["parts"]
    assert cached["caching_text_encoders"] < plain["caching_text_encoders"] - 4  # T5-XXL halves
    assert "text_encoders" not in plain and plain["caching_text_encoders"] > 10


def test_unknown_model_is_sized_as_the_family_default_and_says_so():
    out = vram.estimate({"model_family": "sana", "pretrained_model_name_or_path": "someone/my-model"})
    assert any("not a known model" in a for a in out["assumptions"])
    assert out["total_gb"] > 0


# Swaps that make a GPU preset run on two CPU processes in seconds; everything else is the preset's.
CPU_SWAPS = {"mixed_precision": "no", "max_train_steps": 3, "train_batch_size": 2, "checkpoint_step_interval": 3,
             "validation_disable": True, "validation_step_interval": 0, "lr_warmup_steps": 0}
SIZE_KEYS = ("resolution", "resolution_type", "pretrained_vae_model_name_or_path", "validation_resolution",
             "validation_num_video_frames")


def _cpu_overrides(preset, model: Path) -> dict:
    config = {k: v for k, v in preset.config.items() if k not in SIZE_KEYS}
    config.update(CPU_SWAPS, pretrained_model_name_or_path=str(model))
    if config.get("optimizer") == "adamw_bf16":
        config["optimizer"] = "optimi-adamw"  # adamw_bf16 needs bf16 weights, which a CPU run does not use
    return config


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sana-1.6b-multigpu-full", "sd35-large-multigpu-lora", "sanavideo-2b-multigpu-full"])
def test_multigpu_preset_runs_under_accelerate_launch(tmp_path, request, name):
    from engine_fixtures import copy_config_into, demo_config, events_of, launch_two_processes

    preset = load_preset(name)
    family = preset.model_family
    model = request.getfixturevalue({"sana": "tiny_sana", "sd3": "tiny_sd3", "sanavideo": "tiny_sanavideo"}[family])
    overrides = {"model_family": family, "model_type": preset.model_type, **_cpu_overrides(preset, model)}
    if family == "sanavideo":
        from video_fixtures import video_config
        config = video_config(tmp_path, model, **overrides)
    else:
        config = demo_config(tmp_path, model, **overrides)
    job = copy_config_into(config, tmp_path / "job")
    proc = launch_two_processes(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert events_of(job, "status")[-1]["phase"] == "done"
    progress = events_of(job, "progress")
    assert progress[-1]["step"] == 3 and all(p["loss"] == p["loss"] for p in progress)
    done = events_of(job, "done")[-1]["paths"]
    assert Path(done["pipeline"]).is_dir()


def test_the_estimate_sizes_the_lokr_factor_of_the_users_lycoris_config(tmp_path):
    lyco = tmp_path / "lycoris.json"
    lyco.write_text(json.dumps({"algo": "lokr", "factor": 4, "linear_dim": 10000}))
    base = {"model_family": "sd3", "model_type": "lora", "lora_type": "lycoris"}
    default = vram.estimate(base)["parts"]["adapter"]
    factor4 = vram.estimate({**base, "lycoris_config": str(lyco)})["parts"]["adapter"]
    assert factor4 > default   # a smaller first factor leaves a larger second one
