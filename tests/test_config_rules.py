"""Broken configs: each error names the file, the key, and what to change."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tuner.engine.config import ConfigError, Issue, check_bundle, load_bundle
from tuner.engine.config.prompt_library import validation_library

GOOD_CONFIG = {
    "--model_family": "sd3",
    "--model_type": "lora",
    "--output_dir": "out",
    "--optimizer": "adamw_bf16",
    "--mixed_precision": "bf16",
    "--max_train_steps": "100",
    "--validation_prompt": "a dog",
}
GOOD_DATASETS = [
    {"id": "pics", "type": "local", "instance_data_dir": "images", "caption_strategy": "textfile",
     "cache_dir_vae": "cache/vae"},
    {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True, "cache_dir": "cache/text"},
]
GOOD_PROMPTS = {"dog_beach": "a dog on a beach"}
TURING = {"platform": "Linux-6.8", "gpus": [{"name": "NVIDIA T4", "compute_capability": [7, 5]}]}
AMPERE = {"platform": "Linux-6.8", "gpus": [{"name": "NVIDIA RTX 3090", "compute_capability": [8, 6]}]}
APPLE = {"platform": "macOS-14.4-arm64-arm-64bit", "gpus": []}


def write_folder(root: Path, config: dict, datasets: list, prompts: dict | None) -> Path:
    """A config folder under root/config with an images/ folder next to it."""
    folder = root / "config"
    folder.mkdir(exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "multidatabackend.json").write_text(json.dumps(datasets))
    if prompts is not None:
        (folder / "user_prompt_library.json").write_text(json.dumps(prompts))
    return folder


def set_(**changes) -> Callable[[dict, list, dict], None]:
    def edit(config: dict, datasets: list, prompts: dict) -> None:
        config.update({f"--{k}": v for k, v in changes.items()})
    return edit


def dataset(index: int, **changes) -> Callable[[dict, list, dict], None]:
    def edit(config: dict, datasets: list, prompts: dict) -> None:
        datasets[index].update(changes)
    return edit


def both(*edits) -> Callable[[dict, list, dict], None]:
    def edit(config: dict, datasets: list, prompts: dict) -> None:
        for e in edits:
            e(config, datasets, prompts)
    return edit


def drop(key: str) -> Callable[[dict, list, dict], None]:
    def edit(config: dict, datasets: list, prompts: dict) -> None:
        del config[f"--{key}"]
    return edit


def prompt(nickname: str, text: str) -> Callable[[dict, list, dict], None]:
    def edit(config: dict, datasets: list, prompts: dict) -> None:
        prompts[nickname] = text
    return edit


CONFIG, DATASETS, PROMPTS = "config.json", "multidatabackend.json", "user_prompt_library.json"

# (id, edit, hardware, file, key, a piece of the fix the user reads)
BROKEN = [
    ("typo", set_(lerning_rate=1e-4), None, CONFIG, "lerning_rate", "did you mean 'learning_rate'"),
    ("bad-choice", set_(optimizer="adamw8bit"), None, CONFIG, "optimizer", "bnb-adamw8bit"),
    ("bad-bool", set_(use_ema="maybe"), None, CONFIG, "use_ema", "expected true or false"),
    ("bad-int", set_(train_batch_size="four"), None, CONFIG, "train_batch_size", "expected a whole number"),
    ("zero-batch", set_(train_batch_size=0), None, CONFIG, "train_batch_size", "gradient_accumulation_steps"),
    ("full-quantised", set_(model_type="full", base_model_precision="int8-quanto"), None, CONFIG,
     "base_model_precision", "base_model_precision: no_change"),
    ("bf16-optimizer-fp16", set_(mixed_precision="fp16"), None, CONFIG, "optimizer", "mixed_precision: bf16"),
    ("sana-plain-lora", set_(model_family="sana", lora_type="standard"), None, CONFIG, "lora_type",
     "lora_type: lycoris"),
    ("fp8-old-gpu", set_(base_model_precision="fp8-quanto"), AMPERE, CONFIG, "base_model_precision", "int8-quanto"),
    ("fp8-apple", set_(text_encoder_3_precision="fp8-quanto", optimizer="adamw", mixed_precision="no"), APPLE,
     CONFIG, "text_encoder_3_precision", "Apple"),
    ("bf16-turing", set_(), TURING, CONFIG, "mixed_precision", "mixed_precision: fp16"),
    ("bad-validation-size", set_(validation_resolution="1024by768"), None, CONFIG, "validation_resolution",
     "WIDTHxHEIGHT"),
    ("no-default-embeds", dataset(1, default=False), None, DATASETS, "default", "default: true"),
    ("video-block-on-images", dataset(0, video={"num_frames": 81}), None, DATASETS, "pics.video",
     "set dataset_type: video"),
    ("video-on-image-family", dataset(0, dataset_type="video"), None, DATASETS, "pics.dataset_type",
     "model_family: sanavideo"),
    ("two-offloads", set_(enable_group_offload=True, enable_model_cpu_offload="true"), None, CONFIG,
     "enable_model_cpu_offload", "set one of them to false"),
    ("instanceprompt-without-prompt", dataset(0, caption_strategy="instanceprompt"), None, DATASETS,
     "pics.instance_prompt", "add one"),
    ("missing-data-dir", dataset(0, instance_data_dir="no/such/folder"), None, DATASETS, "pics.instance_data_dir",
     "fix the path"),
    ("no-training-data", dataset(0, disabled=True), None, DATASETS, "dataset_type", "add one with instance_data_dir"),
    ("duplicate-ids", dataset(1, id="pics"), None, DATASETS, "pics.id", "unique id"),
    ("no-checkpoints-kept", set_(checkpoints_total_limit=0), None, CONFIG, "checkpoints_total_limit",
     "keep every checkpoint"),
    ("video-frames-on-images", set_(validation_num_video_frames=81), None, CONFIG, "validation_num_video_frames",
     "remove the key"),
    ("no-length", set_(max_train_steps=0, num_train_epochs=0), None, CONFIG, "max_train_steps",
     "set max_train_steps"),
    ("dataset-typo", dataset(0, crop_aspects="square"), None, DATASETS, "pics.crop_aspects",
     "did you mean 'crop_aspect'"),
    ("dataset-bad-choice", dataset(0, crop_aspect="wide"), None, DATASETS, "pics.crop_aspect",
     "square, preserve, closest, random"),
    ("video-bad-choice", both(set_(model_family="sanavideo", model_type="full"),
                              dataset(0, dataset_type="video", video={"bucket_strategy": "frames"})), None,
     DATASETS, "pics.video.bucket_strategy", "aspect_ratio, resolution_frames"),
    ("same-file-names", prompt("dog beach", "a dog on a beach again"), None, PROMPTS, "dog beach", "rename one"),
    ("empty-prompt", prompt("blank", ""), None, PROMPTS, "blank", "non-empty prompt"),
    ("datasets-file-missing", set_(data_backend_config="config/nope.json"), None, CONFIG, "data_backend_config",
     "fix the path"),
    ("sageattention-sana", set_(model_family="sana", model_type="full", attention_mechanism="sageattention"), None,
     CONFIG, "attention_mechanism", "attention_mechanism: diffusers"),
    ("area-in-pixels", set_(resolution_type="area", resolution=1024), None, CONFIG, "resolution", "pixel_area"),
    ("family-unset", drop("model_family"), None, CONFIG, "model_family", "sanavideo"),
    ("resume-missing", set_(resume_from_checkpoint="out/checkpoint-99"), None, CONFIG, "resume_from_checkpoint",
     "\"latest\""),
    ("lycoris-file-missing", set_(model_family="sana", lora_type="lycoris", lycoris_config="lokr.json"), None,
     CONFIG, "lycoris_config", "fix the path"),
    ("tread-with-crepa", both(set_(model_family="sanavideo", model_type="full", crepa_enabled=True, tread_config={
        "routes": [{"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": -2}]}),
        dataset(0, dataset_type="video")), None, CONFIG, "tread_config", "turn one of them off"),
    ("tread-with-compile", set_(dynamo_backend="inductor", tread_config={"routes": [
        {"selection_ratio": 0.5, "start_layer_idx": 2, "end_layer_idx": -2}]}), None, CONFIG, "tread_config",
     "dynamo_backend: no"),
    ("tread-ratio-above-1", set_(tread_config={"routes": [{"selection_ratio": 1.5, "start_layer_idx": 2,
                                                            "end_layer_idx": -2}]}), None, CONFIG,
     "tread_config.routes.selection_ratio", "less than 1"),
    ("min-above-max-frames", both(set_(model_family="sanavideo", model_type="full"),
                                  dataset(0, dataset_type="video", video={"min_frames": 90, "max_frames": 60,
                                                                          "num_frames": 49})), None,
     DATASETS, "pics.video.min_frames", "swap or fix them"),
]


@pytest.mark.parametrize("edit, hardware, file, key, fix", [case[1:] for case in BROKEN], ids=[c[0] for c in BROKEN])
def test_broken_config_names_file_key_and_fix(tmp_path: Path, edit, hardware, file, key, fix) -> None:
    config, datasets, prompts = copy.deepcopy(GOOD_CONFIG), copy.deepcopy(GOOD_DATASETS), copy.deepcopy(GOOD_PROMPTS)
    edit(config, datasets, prompts)
    folder = write_folder(tmp_path, config, datasets, prompts)
    issues = check_bundle(folder, base_dir=tmp_path, hardware=hardware)
    errors = [i for i in issues if i.level == "error"]
    matching = [i for i in errors if i.key == key]
    assert matching, f"no error on {key!r}; got: {[str(i) for i in issues]}"
    assert any(i.file.endswith(file) and fix in i.message for i in matching), [str(i) for i in matching]
    with pytest.raises(ConfigError) as info:
        load_bundle(folder, base_dir=tmp_path, hardware=hardware)
    assert f"{file}: {key}: " in str(info.value)


def test_good_config_has_no_errors(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_CONFIG, GOOD_DATASETS, GOOD_PROMPTS)
    assert check_bundle(folder, base_dir=tmp_path, hardware=AMPERE) == []


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_CONFIG, GOOD_DATASETS, GOOD_PROMPTS)
    (folder / "config.json").write_text('{"--model_family": "sd3",\n "--output_dir": }')
    [issue] = check_bundle(folder, base_dir=tmp_path)
    assert issue.file.endswith("config.json") and "line 2" in issue.message


def test_unreadable_datasets_file_is_the_only_dataset_error(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_CONFIG, GOOD_DATASETS, GOOD_PROMPTS)
    (folder / "multidatabackend.json").write_text('[{"id": "pics",}]')
    [issue] = check_bundle(folder, base_dir=tmp_path)
    assert issue.file.endswith("multidatabackend.json") and "not valid JSON at line 1" in issue.message


def test_every_fault_is_reported_at_once(tmp_path: Path) -> None:
    config = {**GOOD_CONFIG, "--lerning_rate": "1e-4", "--lr_scheduler": "sine"}
    datasets = copy.deepcopy(GOOD_DATASETS)
    datasets[0]["instance_data_dir"] = "missing"
    folder = write_folder(tmp_path, config, datasets, GOOD_PROMPTS)
    with pytest.raises(ConfigError) as info:
        load_bundle(folder, base_dir=tmp_path)
    assert sorted(i.key for i in info.value.issues if i.level == "error") == \
        ["lerning_rate", "lr_scheduler", "pics.instance_data_dir"]
    assert str(info.value).startswith("3 errors in the config:")


def warnings_for(tmp_path: Path, config: dict, datasets: list | None = None) -> dict[str, str]:
    folder = write_folder(tmp_path, config, datasets or GOOD_DATASETS, GOOD_PROMPTS)
    bundle = load_bundle(folder, base_dir=tmp_path)
    assert all(isinstance(w, Issue) and w.level == "warning" for w in bundle.warnings)
    return {w.key: w.message for w in bundle.warnings}


def test_simpletuner_only_keys_are_warnings(tmp_path: Path) -> None:
    found = warnings_for(tmp_path, {**GOOD_CONFIG, "--snr_gamma": "5", "--validation_steps": "50",
                                    "--fuse_qkv_projections": "true", "--deepspeed_config": "ds.json"})
    assert found["deepspeed_config"].startswith("not supported, ignored: tuner does not run DeepSpeed; for sharded "
                                                "full-rank training set fsdp_enable: true")
    assert found["snr_gamma"] == "not supported, ignored (a SimpleTuner option tuner does not implement)"
    assert found["fuse_qkv_projections"].startswith("not supported, ignored: diffusers fuses Q, K and V")
    assert "checkpoint_step_interval" not in found and "validation_step_interval" in found["validation_steps"]
    folder = tmp_path / "config"
    assert load_bundle(folder, base_dir=tmp_path).train.validation_step_interval == 50


def test_sana_video_warns_about_shift_and_vae(tmp_path: Path) -> None:
    config = {**GOOD_CONFIG, "--model_family": "sanavideo", "--model_type": "full",
              "--flow_schedule_shift": "3", "--flow_schedule_auto_shift": "true",
              "--pretrained_vae_model_name_or_path": "someone/other-vae", "--validation_num_video_frames": 80}
    datasets = copy.deepcopy(GOOD_DATASETS)
    datasets[0].update(dataset_type="video", video={"num_frames": 81, "bucket_strategy": "resolution_frames"})
    found = warnings_for(tmp_path, config, datasets)
    assert "checkpoint's own flow-matching schedule" in found["flow_schedule_shift"]
    assert "ignored for sanavideo" in found["flow_schedule_auto_shift"]
    assert "Sana Video needs its own VAE" in found["pretrained_vae_model_name_or_path"]
    assert "becomes 77" in found["validation_num_video_frames"]


@pytest.mark.parametrize("key,value,says", [
    ("noise_offset", 0.1, "no offset noise is added"),
    ("enable_model_cpu_offload", True, "lower validation_resolution"),
    # SimpleTuner's SageAttention variants load (SD3 has the head size for them) and are said to use SDPA.
    ("attention_mechanism", "sageattention-int8-fp16-triton", "PyTorch's SDPA (diffusers) is used"),
    ("attention_mechanism", "xformers", "PyTorch's SDPA (diffusers) is used"),
])
def test_a_setting_that_cannot_act_yet_is_said_not_dropped(tmp_path: Path, key, value, says) -> None:
    folder = write_folder(tmp_path, {**GOOD_CONFIG, key: value}, GOOD_DATASETS, GOOD_PROMPTS)
    warnings = [i for i in check_bundle(folder, base_dir=tmp_path) if i.level == "warning" and i.key == key]
    assert len(warnings) == 1 and says in warnings[0].message


def test_the_built_in_prompt_library_is_about_the_datasets_subject(tmp_path: Path) -> None:
    config = {k: v for k, v in GOOD_CONFIG.items() if k != "--validation_prompt"}
    datasets = [{**GOOD_DATASETS[0], "caption_strategy": "instanceprompt", "instance_prompt": "sks dog"},
                GOOD_DATASETS[1]]
    folder = write_folder(tmp_path, {**config, "validation_prompt_library": True}, datasets, {"mine": "my prompt"})
    bundle = load_bundle(folder, base_dir=tmp_path)
    library = validation_library(bundle)
    assert library["mine"] == "my prompt" and len(library) == 16
    assert library["studio_portrait"].startswith("a studio portrait of sks dog,")
    # With prompts to sample, there is nothing to warn about.
    assert not [i for i in check_bundle(folder, base_dir=tmp_path) if i.key.startswith("validation_prompt")]


def test_the_built_in_prompt_library_without_a_subject_says_what_it_shows(tmp_path: Path) -> None:
    config = {k: v for k, v in GOOD_CONFIG.items() if k != "--validation_prompt"}
    folder = write_folder(tmp_path, {**config, "validation_prompt_library": True}, GOOD_DATASETS, None)
    [warning] = [i for i in check_bundle(folder, base_dir=tmp_path) if i.key.startswith("validation_prompt")]
    assert warning.key == "validation_prompt_library" and "set instance_prompt on a dataset" in warning.message
    assert validation_library(load_bundle(folder, base_dir=tmp_path))["headshot"].startswith("a close-up headshot of a person,")


def test_a_lycoris_algorithm_tuner_cannot_train_is_refused_by_check(tmp_path: Path) -> None:
    # It used to pass `tuner check` and fail once the model had loaded.
    (tmp_path / "lycoris.json").write_text(json.dumps({"algo": "loha", "linear_dim": 16}))
    config = {**GOOD_CONFIG, "--lora_type": "lycoris", "--lycoris_config": str(tmp_path / "lycoris.json")}
    folder = write_folder(tmp_path, config, GOOD_DATASETS, GOOD_PROMPTS)
    errors = [i for i in check_bundle(folder, base_dir=tmp_path) if i.level == "error"]
    assert [(Path(i.file).name, i.key) for i in errors] == [("lycoris.json", "algo")]
    assert 'set "algo": "lokr"' in errors[0].message


def test_image_to_video_is_said_to_train_as_text_to_video(tmp_path: Path) -> None:
    config = {**GOOD_CONFIG, "--model_family": "sanavideo", "--model_type": "full"}
    datasets = [{**GOOD_DATASETS[0], "dataset_type": "video", "video": {"num_frames": 17, "is_i2v": True}},
                GOOD_DATASETS[1]]
    folder = write_folder(tmp_path, config, datasets, GOOD_PROMPTS)
    [warning] = [i for i in check_bundle(folder, base_dir=tmp_path) if i.key == "pics.video.is_i2v"]
    assert "trains image-to-video" in warning.message and "validation samples stay text-to-video" in warning.message


def test_simpletuner_quickstart_nicknames_load_with_a_warning(tmp_path: Path) -> None:
    # The quickstarts' library has nicknames like anime_<token>; SimpleTuner runs it, so do we.
    prompts = {"anime_<token>": "a breathtaking anime-style portrait of <token>", "chef_sks": "sks as a chef"}
    folder = write_folder(tmp_path, GOOD_CONFIG, GOOD_DATASETS, prompts)
    bundle = load_bundle(folder, base_dir=tmp_path)
    assert bundle.prompts == prompts
    warned = {i.key: i.message for i in bundle.warnings if i.file.endswith("user_prompt_library.json")}
    assert "nickname and prompt still contain <token>: replace it with your subject" in warned["anime_<token>"]
    assert "named 'anime_token'" in warned["anime_<token>"]
    assert list(warned) == ["anime_<token>"]


def test_a_key_given_twice_keeps_the_later_value_and_says_so(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_CONFIG, GOOD_DATASETS, GOOD_PROMPTS)
    text = (folder / "config.json").read_text().rstrip("}")
    # As when SD3's skip-layer-guidance block is pasted into a config that has its own guidance.
    (folder / "config.json").write_text(text + ', "validation_guidance": 4.0, "--validation_guidance_skip_scale": 2.8'
                                        ', "validation_guidance_skip_scale": 5.6, "validation_guidance": 3.0}')
    bundle = load_bundle(folder, base_dir=tmp_path)
    assert bundle.train.validation_guidance == 3.0 and bundle.train.validation_guidance_skip_scale == 5.6
    messages = {i.key: i.message for i in bundle.warnings}
    assert "later value 3.0 is used (the earlier was 4.0)" in messages["validation_guidance"]
    assert "'--validation_guidance_skip_scale' and 'validation_guidance_skip_scale'" in \
        messages["validation_guidance_skip_scale"]


def test_group_offload_says_the_trained_transformer_stays_on_the_gpu(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, {**GOOD_CONFIG, "enable_group_offload": True}, GOOD_DATASETS, GOOD_PROMPTS)
    [warning] = [i for i in check_bundle(folder, base_dir=tmp_path) if i.key == "enable_group_offload"]
    assert warning.level == "warning" and warning.message


def test_quanto_kernels_without_a_compiler_are_warned_about_on_a_gpu_machine(tmp_path: Path, monkeypatch) -> None:
    from tuner.engine.config import rules

    monkeypatch.setattr(rules.shutil, "which", lambda tool: None)  # no nvcc, no ninja on this "machine"
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "no-cuda"))
    folder = write_folder(tmp_path, {**GOOD_CONFIG, "base_model_precision": "int4-quanto"}, GOOD_DATASETS, GOOD_PROMPTS)
    gpu = {"platform": "linux", "gpus": [{"name": "RTX 4090", "compute_capability": [8, 9], "backend": "cuda"}]}
    found = [i for i in load_bundle(folder, base_dir=tmp_path, hardware=gpu).warnings if i.key == "base_model_precision"]
    assert found and "nvcc and ninja are not installed here" in found[0].message


def test_an_output_dir_with_an_earlier_runs_checkpoints_is_refused_unless_the_run_continues_it(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, GOOD_CONFIG, GOOD_DATASETS, GOOD_PROMPTS)
    earlier = tmp_path / "out" / "checkpoint-40"
    earlier.mkdir(parents=True)
    (earlier / "checkpoint.json").write_text("{}")
    [issue] = [i for i in check_bundle(folder, base_dir=tmp_path) if i.level == "error"]
    assert (issue.key, Path(issue.file).name) == ("output_dir", CONFIG)
    assert "already holds checkpoints of an earlier run (latest: checkpoint-40)" in issue.message
    assert '"resume_from_checkpoint": "latest"' in issue.message and "new output_dir" in issue.message
    (folder / "config.json").write_text(json.dumps({**GOOD_CONFIG, "--resume_from_checkpoint": "latest"}))
    assert [i for i in check_bundle(folder, base_dir=tmp_path) if i.level == "error"] == []


def test_a_model_folder_of_another_family_is_refused_by_its_model_index(tmp_path: Path) -> None:
    model = tmp_path / "models" / "my-sd35"
    model.mkdir(parents=True)
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    config = {**GOOD_CONFIG, "--model_family": "sana", "--model_type": "full", "--optimizer": "adamw",
              "--pretrained_model_name_or_path": str(model)}
    folder = write_folder(tmp_path, config, GOOD_DATASETS, GOOD_PROMPTS)
    [issue] = [i for i in check_bundle(folder, base_dir=tmp_path) if i.level == "error"]
    assert issue.key == "pretrained_model_name_or_path"
    assert "holds a StableDiffusion3Pipeline (SD3 / 3.5, model_family 'sd3'), not a Sana model" in issue.message
    assert "set model_family to 'sd3'" in issue.message
    # The family the folder names, or a folder that names no known pipeline, passes.
    (folder / "config.json").write_text(json.dumps({**config, "--model_family": "sd3", "--model_type": "lora",
                                                    "--optimizer": "adamw_bf16"}))
    assert [i for i in check_bundle(folder, base_dir=tmp_path) if i.level == "error"] == []
