"""SimpleTuner's Sana, Sana Video and SD3 quickstart configs, copied as their docs write them.

Each folder under tests/configs/quickstart-* holds the quickstart's config.json (SimpleTuner's
config.json.example edited as its guide says, or the guide's own example), its
multidatabackend.json and its `<token>` prompt library. A user who brings them sees `tuner check`
pass with warnings that say what each setting does here, and then trains; for training on this
machine only the model, the sizes and the length are made tiny.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuner.engine.cli import main
from tuner.engine.config import load_bundle
from data_fixtures import make_image
from engine_fixtures import events_of, train_config
from video_fixtures import make_clips

CONFIGS = Path(__file__).parent / "configs"


def bring(name: str, root: Path) -> Path:
    """The quickstart's files in a SimpleTuner-style checkout: config/ beside datasets/."""
    shutil.copytree(CONFIGS / f"quickstart-{name}", root, dirs_exist_ok=True)
    return root


def read(path: Path):
    return json.loads(path.read_text())


def write(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2))


def make_tiny(config_file: Path, datasets_file: Path, model: Path, **changes) -> None:
    """Point the config at a tiny model and shrink sizes and length; every other key stays as written."""
    config = read(config_file)
    for key in list(config):
        bare = key.removeprefix("--")
        if bare in ("pretrained_model_name_or_path", "pretrained_vae_model_name_or_path"):
            config[key] = str(model)
        elif bare in ("resolution", "validation_resolution"):
            config[key] = 64 if bare == "resolution" else "64x64"
        elif bare in ("max_train_steps", "validation_num_inference_steps"):
            config[key] = 2
    config.update({"resolution_type": "pixel", "validation_step_interval": 2, "checkpoint_step_interval": 2,
                   **changes})
    config = {k: v for k, v in config.items() if k.removeprefix("--") not in
              ("validation_steps", "checkpointing_steps", "resolution_type")} | {"resolution_type": "pixel"}
    write(config_file, config)
    datasets = read(datasets_file)
    for ds in datasets:
        if ds.get("dataset_type") == "text_embeds":
            continue
        ds.update(resolution=64, resolution_type="pixel", minimum_image_size=0, target_downsample_size=None,
                  maximum_image_size=None)
        if "video" in ds:
            ds["video"] = {**ds["video"], "num_frames": 5, "min_frames": 5}
    write(datasets_file, datasets)


def check(root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(root)
    code = main(["check", "config/config.json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


# --------------------------------------------------------------------------------------------
# Sana full-rank: a 512 px regularisation set, the subject at 1024 px and at 512 px
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sana_root(tmp_path: Path) -> Path:
    root = bring("sana", tmp_path / "SimpleTuner")
    for i in range(4):
        make_image(root / "datasets" / "pseudo-camera-10k" / f"a camera photo number {i}.png", 512, 512, seed=i)
    for i in range(2):
        make_image(root / "datasets" / "dreambooth-subject" / f"subject-{i}.png", 1024, 1024, seed=10 + i)
    return root


def test_sanas_quickstart_checks_clean_and_says_what_each_setting_does(sana_root, capsys, monkeypatch) -> None:
    out = check(sana_root, capsys, monkeypatch)
    assert "0 errors" in out.splitlines()[-1]
    assert "anime_<token>: nickname and prompt still contain <token>: replace it with your subject" in out
    assert "so its validation files are named 'anime_token'" in out
    assert "checkpointing_steps: old SimpleTuner name; rename it to 'checkpoint_step_interval'" in out
    assert "pseudo-camera-10k-sana.is_regularisation_data: full-rank training has no frozen base" in out
    assert "lycoris_config: ignored: it applies only with model_type: lora" in out


def test_sanas_quickstart_trains_and_samples_its_prompt_library(sana_root, tiny_sana, monkeypatch) -> None:
    monkeypatch.chdir(sana_root)
    config = sana_root / "config"
    make_tiny(config / "config.json", config / "multidatabackend.json", tiny_sana)
    result = train_config(config, sana_root / "job")
    assert result.step == 2
    step = sana_root / "output" / "models" / "validation_images" / "step-000002"
    names = sorted(p.name for p in step.iterdir())
    assert "anime_token-64x64.png" in names and "family-64x64.png" in names
    assert (sana_root / "output" / "models" / "pipeline" / "transformer").is_dir()


# --------------------------------------------------------------------------------------------
# Sana Video full-rank, bf16, with EMA, as its quickstart's example config
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sanavideo_root(tmp_path: Path) -> Path:
    root = bring("sanavideo", tmp_path / "SimpleTuner")
    make_clips(root / "datasets" / "disney-black-and-white", count=2, frames=81, size=(832, 480))
    return root


def test_sana_videos_quickstart_checks_clean(sanavideo_root, capsys, monkeypatch) -> None:
    out = check(sanavideo_root, capsys, monkeypatch)
    assert "0 errors" in out.splitlines()[-1]
    assert "base_model_precision" not in out  # bf16 is a plain precision: no quantisation
    assert "lr_warmup_steps: warm-up (400000 steps) lasts the whole run" in out


def test_sana_videos_quickstart_trains(sanavideo_root, tiny_sanavideo, monkeypatch) -> None:
    monkeypatch.chdir(sanavideo_root)
    config = sanavideo_root / "config"
    make_tiny(config / "config.json", config / "sanavideo" / "multidatabackend.json", tiny_sanavideo,
              validation_num_video_frames=5)
    # One clip is too short for the dataset's min_frames: it is skipped, by name, and the run goes on.
    make_clips(sanavideo_root / "datasets" / "short", count=1, frames=3)
    short = next((sanavideo_root / "datasets" / "short").glob("*.mp4"))
    shutil.move(short, sanavideo_root / "datasets" / "disney-black-and-white" / "short.mp4")
    (sanavideo_root / "datasets" / "disney-black-and-white" / "short.txt").write_text("a short clip")
    result = train_config(config, sanavideo_root / "job")
    assert result.step == 2
    logs = " ".join(e.get("message", "") for e in events_of(sanavideo_root / "job", "log"))
    assert "short.mp4" in logs
    output = sanavideo_root / "output" / "sanavideo"
    assert (output / "pipeline-ema").is_dir() and (output / "pipeline").is_dir()


# --------------------------------------------------------------------------------------------
# SD3 LoRA with int8-quanto and the skip-layer-guidance block pasted in
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sd3_root(tmp_path: Path) -> Path:
    root = bring("sd3", tmp_path / "SimpleTuner")
    for i in range(4):
        make_image(root / "datasets" / "pseudo-camera-10k" / f"a camera photo number {i}.png", 1024, 1024, seed=i)
    return root


def test_sd3s_quickstart_with_skip_layer_guidance_checks_clean(sd3_root, capsys, monkeypatch) -> None:
    out = check(sd3_root, capsys, monkeypatch)
    assert "0 errors" in out.splitlines()[-1]
    assert "validation_guidance: given twice, as 'validation_guidance' and '--validation_guidance'; the later " \
           "value 4.0 is used" in out
    assert "flux_schedule_auto_shift: old SimpleTuner name; rename it to 'flow_schedule_auto_shift'" in out
    bundle = load_bundle(sd3_root / "config")
    assert bundle.train.validation_guidance == 4.0 and bundle.train.validation_guidance_skip_layers == [7, 8, 9]
    assert bundle.train.flow_schedule_auto_shift and bundle.train.flow_use_uniform_schedule


def test_sd3s_quickstart_trains_a_lora(sd3_root, tiny_sd3, monkeypatch) -> None:
    monkeypatch.chdir(sd3_root)
    config = sd3_root / "config"
    # The tiny SD3 has 2 layers: skip the last one instead of layers 7-9.
    make_tiny(config / "config.json", config / "multidatabackend.json", tiny_sd3,
              validation_guidance_skip_layers=[1])
    result = train_config(config, sd3_root / "job")
    assert result.step == 2
    assert (sd3_root / "output" / "models" / "pipeline" / "pytorch_lora_weights.safetensors").is_file()
    step = sd3_root / "output" / "models" / "validation_images" / "step-000002"
    assert (step / "chef_token-64x64.png").is_file()
