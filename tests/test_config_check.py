"""`tuner check`: what a user sees for a good SimpleTuner folder and for a broken one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tuner.engine.cli import main

FIXTURE = Path(__file__).parent / "configs" / "simpletuner-sd3"


@pytest.fixture
def st_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    dogs = tmp_path / "datasets" / "dog"
    dogs.mkdir(parents=True)
    for i in range(2):  # at least minimum_image_size 512, as the fixture's dataset asks
        Image.new("RGB", (640, 576), (40 * i, 90, 160)).save(dogs / f"dog-{i}.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def break_it(root: Path) -> None:
    """Three faults in two files: a typo, a bad value, a missing image folder."""
    config_file = root / "config" / "config.json"
    config = json.loads(config_file.read_text())
    config["--lerning_rate"] = "1e-4"
    config["--mixed_precision"] = "fp32"
    config_file.write_text(json.dumps(config))
    shutil.rmtree(root / "datasets" / "dog")


def test_simpletuner_folder_passes(st_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "0 errors, 3 warnings"
    assert "config/config.json: disable_benchmark: not supported, ignored" in "\n".join(lines)
    assert "Errors:" not in lines


def test_a_config_json_path_works_too(st_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(st_root / "config" / "config.json")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 errors, 3 warnings"


def test_every_error_is_printed_with_file_key_and_fix(st_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_it(st_root)
    assert main(["check", "config"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 errors, 3 warnings"
    assert lines[0] == "Errors:"
    errors = lines[1:4]
    assert errors[0] == "config/config.json: lerning_rate: unknown key; did you mean 'learning_rate'?"
    assert errors[1] == "config/config.json: mixed_precision: got 'fp32'; allowed values: bf16, fp16, no"
    assert errors[2].startswith("config/multidatabackend.json: dog-photos.instance_data_dir: 'datasets/dog' does not exist")
    assert errors[2].endswith("fix the path, or set disabled: true")
    assert lines[4] == "Warnings:"


def test_json_output(st_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    break_it(st_root)
    assert main(["check", "config", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [(e["file"], e["key"]) for e in report["errors"]] == [
        ("config/config.json", "lerning_rate"),
        ("config/config.json", "mixed_precision"),
        ("config/multidatabackend.json", "dog-photos.instance_data_dir"),
    ]
    assert all(e["level"] == "error" and e["message"] for e in report["errors"])
    assert {w["key"] for w in report["warnings"]} == {"disable_benchmark", "aspect_bucket_rounding", "minimum_image_size"}


def test_missing_folder_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nowhere")]) == 1
    out = capsys.readouterr().out
    assert "nowhere: (file): not found; pass a config folder or a config.json" in out
    assert out.splitlines()[-1] == "1 error, 0 warnings"


def test_check_looks_at_the_data_as_training_would(st_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One usable image (the other is under minimum_image_size) cannot fill a batch of 4 even with repeats 0.
    config_file = st_root / "config" / "config.json"
    config = json.loads(config_file.read_text())
    config["--train_batch_size"] = 4
    config_file.write_text(json.dumps(config))
    datasets_file = st_root / "config" / "multidatabackend.json"
    datasets = json.loads(datasets_file.read_text())
    datasets[0]["repeats"] = 0
    datasets_file.write_text(json.dumps(datasets))
    Image.new("RGB", (300, 300)).save(st_root / "datasets" / "dog" / "small.png")
    (st_root / "datasets" / "dog" / "dog-1.png").unlink()
    assert main(["check", "config"]) == 1
    out = capsys.readouterr().out
    assert "config/multidatabackend.json: dog-photos: has 1 usable images × (repeats 0 + 1) = 1 samples" in out
    assert 'set "repeats": 3 in multidatabackend.json' in out
    assert "dog-photos: 1 files skipped, smaller than minimum_image_size 512: small.png" in out
    # --no-data checks the settings only.
    assert main(["check", "config", "--no-data"]) == 0
