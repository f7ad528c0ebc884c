"""The config model: SimpleTuner folders load, values coerce like SimpleTuner's CLI, job files round-trip."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from tuner.engine.config import (
    ConfigBundle,
    ConfigError,
    DatasetConfig,
    TrainConfig,
    VideoConfig,
    check_bundle,
    field_info,
    load_bundle,
    parse_datasets,
    parse_resolutions,
    parse_train_config,
    job_files,
    write_job_files,
)

FIXTURE = Path(__file__).parent / "configs" / "simpletuner-sd3"


@pytest.fixture
def st_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SimpleTuner checkout layout: config/ with `--` keys, datasets/ with one image, cwd at the root."""
    shutil.copytree(FIXTURE, tmp_path, dirs_exist_ok=True)
    (tmp_path / "datasets" / "dog").mkdir(parents=True)
    (tmp_path / "datasets" / "dog" / "1.png").write_bytes(b"not really a png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_simpletuner_folder_loads_with_its_values(st_root: Path) -> None:
    bundle = load_bundle(st_root / "config")
    cfg = bundle.train
    assert cfg.model_family == "sd3" and cfg.model_type == "lora"
    assert cfg.train_batch_size == 1 and cfg.max_train_steps == 10000 and cfg.num_train_epochs == 0
    assert cfg.learning_rate == pytest.approx(1e-4)
    assert cfg.gradient_checkpointing is True and cfg.use_ema is False and cfg.validation_preview is True
    assert cfg.optimizer_config == {"weight_decay": 0.01, "eps": 1e-8}
    assert cfg.validation_guidance_skip_layers == [7, 8, 9]
    assert cfg.validation_resolutions() == [(1024, 1024), (1280, 768)]
    assert [d.id for d in bundle.enabled_datasets] == ["dog-photos"]
    assert bundle.text_embeds_dataset is not None and bundle.text_embeds_dataset.id == "text-embeds"
    assert bundle.datasets[0].repeats == 10 and bundle.datasets[0].crop is False
    assert bundle.prompts["dog on the beach"].startswith("a photo of sks dog")
    assert bundle.databackend_path == st_root / "config" / "multidatabackend.json"
    # Relative dataset paths resolve against the working directory, like SimpleTuner's.
    assert bundle.resolve(bundle.datasets[0].instance_data_dir) == st_root / "datasets" / "dog"
    warned = {w.key: w.message for w in bundle.warnings}
    assert "not supported, ignored" in warned["disable_benchmark"]
    assert "multidatabackend.json" in warned["minimum_image_size"]


def test_relative_paths_fall_back_to_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir()
    (tmp_path / "imgs").mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_family": "sd3", "data_backend_config": "my-datasets.json", "validation_disable": True}))
    datasets = [{"id": "a", "instance_data_dir": str(tmp_path / "imgs")},
                {"id": "t", "dataset_type": "text_embeds", "default": True}]
    (folder / "my-datasets.json").write_text(json.dumps(datasets))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    bundle = load_bundle(folder / "config.json", base_dir=elsewhere)
    assert bundle.databackend_path == folder / "my-datasets.json"
    # The same name under base_dir wins, as in SimpleTuner (paths are relative to where it runs).
    (elsewhere / "my-datasets.json").write_text(json.dumps(datasets))
    assert load_bundle(folder, base_dir=elsewhere).databackend_path == elsewhere / "my-datasets.json"


def test_string_values_coerce_like_simpletuner_cli() -> None:
    for text, expected in [("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False)]:
        cfg, issues = parse_train_config({"--use_ema": text})
        assert issues == [] and cfg is not None and cfg.use_ema is expected, text
    cfg, issues = parse_train_config({"learning_rate": "5e-5", "lora_rank": "32", "seed": "None",
                                      "max_train_steps": None, "tracker_run_name": 7})
    assert issues == []
    assert (cfg.learning_rate, cfg.lora_rank, cfg.seed, cfg.max_train_steps, cfg.tracker_run_name) == (5e-5, 32, None, 0, "7")


def test_optimizer_config_accepts_string_and_dict() -> None:
    cfg, _ = parse_train_config({"optimizer_config": "betas_decay=0.8,foreach=false,name=x"})
    assert cfg.optimizer_config == {"betas_decay": 0.8, "foreach": False, "name": "x"}
    cfg, _ = parse_train_config({"optimizer_config": {"weight_decay": 0.1}})
    assert cfg.optimizer_config == {"weight_decay": 0.1}
    cfg, issues = parse_train_config({"optimizer_config": "weight_decay"})
    assert cfg is None and "key=value" in issues[0].message


def test_sparse_overlay_validates_without_errors() -> None:
    # The preset loader validates sparse overlays: nothing may be required.
    cfg, issues = parse_train_config({"base_model_precision": "nf4-bnb", "optimizer": "bnb-lion8bit-paged"})
    assert issues == [] and cfg.train_batch_size == 1
    datasets, issues = parse_datasets([{"id": "v", "dataset_type": "video", "video": {"num_frames": "81", "is_i2v": "false"}}])
    assert issues == [] and datasets[0].video == VideoConfig(num_frames=81)


def test_parse_functions_collect_every_error() -> None:
    cfg, issues = parse_train_config({"train_batch_size": 0, "optimizer": "sgd", "use_ema": "maybe"}, file="x.json")
    assert cfg is None
    assert sorted(i.key for i in issues) == ["optimizer", "train_batch_size", "use_ema"]
    assert all(i.file == "x.json" and i.level == "error" for i in issues)
    datasets, issues = parse_datasets([{"id": "a", "crop_style": "left"}, {"dataset_type": "image"}])
    assert datasets is None
    assert [i.key for i in issues] == ["a.crop_style", "#2.id"]


@pytest.mark.parametrize("text, sizes", [
    ("1024", [(1024, 1024)]),
    ("1024x768", [(1024, 768)]),
    ("1024x1024, 1280x768", [(1024, 1024), (1280, 768)]),
    (832, [(832, 832)]),
])
def test_parse_resolutions(text, sizes) -> None:
    assert parse_resolutions(text) == sizes


@pytest.mark.parametrize("text", ["", "1024x", "big", "1024*768", "0x512", "1024x768,"])
def test_parse_resolutions_rejects(text) -> None:
    with pytest.raises(ValueError, match="WIDTHxHEIGHT|empty|positive"):
        parse_resolutions(text)


def test_field_info_describes_every_key() -> None:
    for model in (TrainConfig, DatasetConfig, VideoConfig):
        for key in model.model_fields:
            info = field_info(model, key)
            assert info["description"], f"{model.__name__}.{key} has no description for the wizard"
    info = field_info(TrainConfig, "lr_scheduler")
    assert info["default"] == "constant" and "cosine" in info["choices"] and info["type"] == "choice"
    assert field_info(TrainConfig, "ema_decay")["default"] == 0.995
    assert field_info(TrainConfig, "lora_alpha")["type"] == "float | None"
    assert field_info(DatasetConfig, "crop_aspect")["choices"] == ["square", "preserve", "closest", "random"]


def _dumps(bundle: ConfigBundle) -> tuple[dict, list[dict]]:
    """The settings with every path as the engine resolves it."""
    train = bundle.train.model_dump(exclude={"data_backend_config", "user_prompt_library"})
    for key in ("output_dir", "lycoris_config", "group_offload_to_disk_path"):
        if train[key]:
            train[key] = str(bundle.resolve(train[key]))
    datasets = []
    for ds in bundle.datasets:
        entry = ds.model_dump()
        for key in ("instance_data_dir", "cache_dir_vae", "cache_dir"):
            if entry[key]:
                entry[key] = str(bundle.resolve(entry[key]))
        datasets.append(entry)
    return train, datasets


def test_job_files_load_back_as_the_same_run(st_root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = load_bundle(st_root / "config")
    out = tmp_path_factory.mktemp("job")
    write_job_files(job_files(first, out), out)
    written = json.loads((out / "config.json").read_text())
    assert not any(k.startswith("--") for k in written)
    assert written["data_backend_config"] == str(out / "multidatabackend.json")
    assert written["user_prompt_library"] == str(out / "user_prompt_library.json")
    assert "disable_benchmark" not in written and "validation_negative_prompt" not in written  # only keys the user set
    second = load_bundle(out)
    assert _dumps(second) == _dumps(first)
    assert second.prompts == first.prompts
    assert second.train.model_fields_set == first.train.model_fields_set


def test_job_files_hold_absolute_paths_that_run_from_anywhere(st_root: Path, tmp_path_factory: pytest.TempPathFactory,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_bundle(st_root / "config")
    out = tmp_path_factory.mktemp("job")
    write_job_files(job_files(first, out), out)
    monkeypatch.chdir(tmp_path_factory.mktemp("other-cwd"))
    second = load_bundle(out)
    assert second.datasets[0].instance_data_dir == str(st_root / "datasets" / "dog")
    assert second.train.output_dir == str(st_root / "output" / "models")
    assert second.train.pretrained_model_name_or_path == first.train.pretrained_model_name_or_path  # a hub id
    assert [second.resolve(d.cache_dir_vae) for d in second.datasets if d.cache_dir_vae] == \
           [first.resolve(d.cache_dir_vae) for d in first.datasets if d.cache_dir_vae]


def test_toml_config_loads_like_json(st_root: Path) -> None:
    json_bundle = load_bundle(st_root / "config")
    folder = st_root / "toml"
    folder.mkdir()
    config = json.loads((st_root / "config" / "config.json").read_text())
    config["--data_backend_config"] = "toml/multidatabackend.toml"
    datasets = json.loads((st_root / "config" / "multidatabackend.json").read_text())
    (folder / "config.toml").write_text(tomli_w.dumps(config))
    (folder / "multidatabackend.toml").write_text(tomli_w.dumps({"datasets": datasets}))
    toml_bundle = load_bundle(folder)
    assert toml_bundle.config_path.name == "config.toml"
    assert _dumps(toml_bundle) == _dumps(json_bundle)


def test_missing_folder_is_an_issue_not_an_exception(tmp_path: Path) -> None:
    issues = check_bundle(tmp_path / "nope")
    assert len(issues) == 1 and issues[0].level == "error" and "not found" in issues[0].message
    with pytest.raises(ConfigError) as info:
        load_bundle(tmp_path / "nope")
    assert "nope" in str(info.value)


@pytest.mark.parametrize("first", ["tuner.engine.config.rules", "tuner.engine.config.io", "tuner.engine.config.check",
                                   "tuner.engine.config.models", "tuner.engine.config.bundle", "tuner.engine.families"])
def test_config_modules_import_in_any_order_without_torch(first: str) -> None:
    # Whichever module comes first, none may need another one half-built (no import cycle).
    code = (f"import sys, {first}; "
            "from tuner.engine.config import load_bundle; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wrong_working_dir_is_explained(st_root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # SimpleTuner paths are relative to its checkout; checked from elsewhere, say so instead of "not found".
    issues = check_bundle(st_root / "config", base_dir=tmp_path_factory.mktemp("elsewhere"))
    message = next(i.message for i in issues if i.key == "data_backend_config")
    assert "multidatabackend.json sits next to the config: run from the folder the path is relative to" in message


def test_choice_suggestion_ignores_case() -> None:
    _, issues = parse_train_config({"mixed_precision": "BF16"})
    assert issues[0].message.endswith("did you mean 'bf16'?")


@pytest.mark.parametrize("plain", ["bf16", "fp16", "fp32", "no_change"])
def test_plain_precisions_from_simpletuner_quickstarts_mean_no_quantisation(plain: str) -> None:
    cfg, issues = parse_train_config({"model_family": "sanavideo", "model_type": "full",
                                      "base_model_precision": plain, "text_encoder_1_precision": plain})
    assert issues == [] and cfg.base_model_precision == cfg.text_encoder_1_precision == "no_change"
