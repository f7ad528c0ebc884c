"""Presets: every shipped one validates, the ranking picks the right tier, the overlay and the errors behave."""
from __future__ import annotations

import copy
import json

import pytest

from tuner.engine.cli import main
from tuner.engine.hardware import describe
from tuner.presets import (
    FITS, NO_FIT, TIGHT, PresetError, apply_preset, check_preset, list_presets, load_preset, rank_presets,
)
from tuner.presets.ranking import HEADROOM

SHIPPED = list_presets()
FAMILIES = ("sana", "sd3", "sanavideo")
GOOD_HEADER = """\
[preset]
name = "{name}"
description = "a test preset"
model_family = "sana"
model_type = "full"
[preset.hardware]
min_vram_gb = {vram}
gpus = {gpus}
bf16_required = true
estimated_vram_gb = {estimate}
"""


def write_preset(folder, name, vram=24, gpus=1, estimate=10, body=""):
    path = folder / f"{name}.toml"
    path.write_text(GOOD_HEADER.format(name=name, vram=vram, gpus=gpus, estimate=estimate) + body)
    return path


def cpu_only():
    return {**describe(0, 0), "ram_total_gb": 32.0}


def first(family, hardware, extra_dirs=()):
    return rank_presets(list_presets(family, extra_dirs=extra_dirs), hardware)[0]


@pytest.fixture(autouse=True)
def no_user_presets(tmp_path, monkeypatch):
    # A developer's own ~/.config/tuner/presets must not change what these tests see.
    monkeypatch.setattr("tuner.presets.loader.user_preset_dir", lambda: tmp_path / "no-user-presets")


def test_every_tier_the_spec_names_is_shipped():
    names = {p.name for p in SHIPPED}
    assert {
        "sana-1.6b-12gb-lokr-nf4", "sana-1.6b-24gb-full", "sana-1.6b-multigpu-full",
        "sd35-large-12gb-lora-nf4", "sd35-large-24gb-lora-int8", "sd35-large-multigpu-lora",
        "sd35-medium-24gb-lora", "sanavideo-2b-24gb-full", "sanavideo-2b-multigpu-full",
    } <= names


@pytest.mark.parametrize("preset", SHIPPED, ids=lambda p: p.name)
def test_shipped_preset_validates_against_the_config_model(preset):
    # Warnings count too: a shipped key that tuner ignores would mislead the user.
    assert [str(i) for i in check_preset(preset)] == []
    assert preset.name == preset.path.stem
    assert preset.description and preset.notes.get("vram") and preset.notes.get("speed")


@pytest.mark.parametrize("preset", [p for p in SHIPPED if p.gpus > 0], ids=lambda p: p.name)
def test_shipped_estimate_fits_its_own_tier(preset):
    # A card of exactly the tier's size must rank the preset as fitting, not tight.
    assert preset.estimated_vram_gb <= HEADROOM * preset.min_vram_gb
    fit, reason = rank_presets([preset], describe(preset.min_vram_gb, preset.gpus))[0][1:]
    assert fit == FITS, reason


@pytest.mark.parametrize("preset", [p for p in SHIPPED if p.name != "sana-tiny-demo"], ids=lambda p: p.name)
def test_every_overlay_key_carries_a_reason(preset):
    # Presets are read by users: each [config] line must say why (a trailing comment).
    lines = preset.path.read_text().splitlines()
    in_config = False
    for line in lines:
        if line.startswith("["):
            in_config = line.strip() == "[config]"
        elif in_config and "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line.split("=", 1)[1], f"{preset.path.name}: no comment on {line!r}"


@pytest.mark.parametrize(
    ("hardware", "expected"),
    [
        (describe(12, 1), {"sana": "sana-1.6b-12gb-lokr-nf4", "sd3": "sd35-large-12gb-lora-nf4"}),
        (describe(24, 1), {"sana": "sana-1.6b-24gb-full", "sd3": "sd35-large-24gb-lora-int8",
                           "sanavideo": "sanavideo-2b-24gb-full"}),
        (describe(24, 4), {"sana": "sana-1.6b-multigpu-full", "sd3": "sd35-large-multigpu-lora",
                           "sanavideo": "sanavideo-2b-24gb-full"}),
        (describe(80, 8), {"sana": "sana-1.6b-multigpu-full", "sd3": "sd35-large-multigpu-lora",
                           "sanavideo": "sanavideo-2b-multigpu-full"}),
    ],
    ids=["1x12GB", "1x24GB", "4x24GB", "8x80GB"],
)
def test_ranking_puts_the_tier_that_uses_the_machine_best_first(hardware, expected):
    for family, name in expected.items():
        preset, fit, reason = first(family, hardware)
        assert (preset.name, fit) == (name, FITS), reason


def test_nothing_for_sana_video_fits_a_12gb_card():
    ranked = rank_presets(list_presets("sanavideo"), describe(12, 1))
    assert [fit for _, fit, _ in ranked] == [NO_FIT] * len(ranked)
    assert "16 GB" in ranked[0][2] and "12.0 GB" in ranked[0][2]


def test_cpu_only_machine_ranks_cpu_presets_first_and_says_why_the_rest_do_not_fit(tmp_path):
    write_preset(tmp_path, "cpu-demo", vram=0, gpus=0, estimate=0)
    ranked = rank_presets(list_presets("sana", extra_dirs=[tmp_path]), cpu_only())
    assert ranked[0][1] == FITS and ranked[0][0].gpus == 0
    gpu_ranked = [r for r in ranked if r[0].gpus > 0]
    assert gpu_ranked and all(fit == NO_FIT and "none" in reason for _, fit, reason in gpu_ranked)


def test_gpu_without_bf16_does_not_fit_bf16_presets():
    preset, fit, reason = rank_presets([load_preset("sana-1.6b-24gb-full")], describe(24, 1, bf16=False))[0]
    assert fit == NO_FIT and "bf16" in reason


def test_little_free_vram_or_ram_makes_a_preset_tight():
    preset = load_preset("sd35-large-12gb-lora-nf4")
    busy = describe(12, 1)
    busy["gpus"][0]["vram_free_gb"] = 9.0  # a desktop session holds 3 GB
    assert rank_presets([preset], busy)[0][1] == TIGHT
    small_ram = {**describe(12, 1), "ram_total_gb": 16.0}
    fit, reason = rank_presets([preset], small_ram)[0][1:]
    assert fit == TIGHT and "RAM" in reason


def test_real_nvml_sizes_stay_in_their_tier():
    # nvidia-smi shows a 4090 as 24564 MiB = 23.99 GiB: it is still a 24 GB card.
    assert rank_presets([load_preset("sana-1.6b-24gb-full")], describe(23.99, 1))[0][1] == FITS
    assert rank_presets([load_preset("sana-1.6b-24gb-full")], describe(20, 1))[0][1] == NO_FIT


def test_apply_preset_overlays_and_leaves_inputs_unchanged():
    preset = load_preset("sanavideo-2b-24gb-full")
    base = {"--learning_rate": 1e-3, "output_dir": "mine", "train_batch_size": 8, "seed": 7}
    datasets = [
        {"id": "imgs", "instance_data_dir": "a", "resolution": 1024},
        {"id": "clips", "dataset_type": "video", "instance_data_dir": "b", "video": {"num_frames": 33, "is_i2v": True}},
        {"id": "embeds", "dataset_type": "text_embeds", "default": True},
    ]
    before = copy.deepcopy((base, datasets))
    config, out = apply_preset(preset, base, datasets)
    assert (base, datasets) == before
    assert config["learning_rate"] == 1e-5 and "--learning_rate" not in config
    assert config["train_batch_size"] == 1 and config["model_family"] == "sanavideo"
    assert config["output_dir"] == "mine" and config["seed"] == 7
    assert out[0]["resolution"] == 480 and "video" not in out[0]
    assert out[1]["video"] == {"num_frames": 49, "is_i2v": True}
    assert out[2] == datasets[2]
    out[1]["video"]["num_frames"] = 1  # the results are copies: editing them leaves the preset alone
    assert preset.dataset["video"] == {"num_frames": 49}


def test_user_preset_overrides_a_shipped_one_by_name(tmp_path):
    write_preset(tmp_path, "sana-1.6b-24gb-full", estimate=12, body="[config]\nlearning_rate = 3e-6\n")
    preset = {p.name: p for p in list_presets(extra_dirs=[tmp_path])}["sana-1.6b-24gb-full"]
    assert preset.config == {"learning_rate": 3e-6} and preset.source == "extra"
    assert load_preset("sana-1.6b-24gb-full", extra_dirs=[tmp_path]).estimated_vram_gb == 12


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("[preset.notes]\nspeed = 3\n", "preset.notes.speed"),
        ("[config]\nlearning_rate = 1e-5\n[extras]\nx = 1\n", "extras"),
    ],
)
def test_malformed_user_preset_names_file_and_key(tmp_path, body, key):
    path = write_preset(tmp_path, "broken", body=body)
    with pytest.raises(PresetError) as info:
        list_presets(extra_dirs=[tmp_path])
    assert info.value.key == key and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (GOOD_HEADER.replace("min_vram_gb", "min_vram_gbb"), "preset.hardware.min_vram_gbb", "min_vram_gb"),
        (GOOD_HEADER.replace("gpus = {gpus}\n", ""), "preset.hardware.gpus", "missing"),
        (GOOD_HEADER.replace("bf16_required = true", 'bf16_required = "yes"'), "preset.hardware.bf16_required", "true or false"),
        (GOOD_HEADER.replace('name = "{name}"', 'name = "other"'), "preset.name", "must match"),
        (GOOD_HEADER + "[config]\nmodel_family = 'sd3'\n", "config.model_family", "agree"),
        (GOOD_HEADER + "[config\n", None, "not valid TOML"),
    ],
    ids=["typo", "missing", "type", "name", "family", "syntax"],
)
def test_header_errors_say_what_to_fix(tmp_path, text, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(text.format(name="bad", vram=24, gpus=1, estimate=10))
    with pytest.raises(PresetError) as info:
        load_preset(path)
    assert info.value.key == key and words in str(info.value) and str(path) in str(info.value)


def test_list_presets_can_collect_errors_instead_of_raising(tmp_path):
    write_preset(tmp_path, "ok")
    write_preset(tmp_path, "broken", body="[preset.notes]\nspeed = 3\n")
    errors = []
    names = [p.name for p in list_presets(extra_dirs=[tmp_path], errors=errors)]
    assert "ok" in names and "broken" not in names
    assert [e.key for e in errors] == ["preset.notes.speed"]


def test_config_errors_in_a_user_preset_name_the_key(tmp_path):
    write_preset(tmp_path, "typo", body="[config]\nlearning_rat = 1e-5\n[dataset]\nresolution = -1\n")
    issues = check_preset(load_preset(tmp_path / "typo.toml"))
    assert {(i.key, i.level) for i in issues} == {("config.learning_rat", "error"), ("dataset.resolution", "error")}
    assert "learning_rate" in next(i.message for i in issues if i.key == "config.learning_rat")


def test_unknown_preset_name_suggests_the_nearest():
    with pytest.raises(PresetError, match="sana-1.6b-24gb-full"):
        load_preset("sana-1.6b-24gb-ful")


def test_tuner_presets_json_for_a_planned_machine(capsys):
    assert main(["presets", "--vram-gb", "24", "--gpus", "4", "--family", "sana", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hardware"]["platform"] == "planned" and len(out["hardware"]["gpus"]) == 4
    assert out["presets"][0]["name"] == "sana-1.6b-multigpu-full" and out["presets"][0]["fit"] == FITS
    assert {p["model_family"] for p in out["presets"]} == {"sana"} and out["errors"] == []


def test_tuner_presets_json_on_this_machine(capsys):
    assert main(["presets", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in out["presets"]} == {p.name for p in SHIPPED}
    assert {p["fit"] for p in out["presets"]} <= {FITS, TIGHT, NO_FIT}


def test_tuner_presets_reports_a_broken_user_preset_and_fails(tmp_path, monkeypatch, capsys):
    write_preset(tmp_path, "typo", body="[config]\nlearning_rat = 1e-5\n")
    monkeypatch.setattr("tuner.presets.loader.user_preset_dir", lambda: tmp_path)
    assert main(["presets", "--json"]) == 1
    errors = json.loads(capsys.readouterr().out)["errors"]
    assert len(errors) == 1 and "typo.toml" in errors[0] and "config.learning_rat" in errors[0]


def test_tuner_presets_show_prints_the_file(capsys):
    assert main(["presets", "--show", "sd35-large-multigpu-lora"]) == 0
    assert capsys.readouterr().out == load_preset("sd35-large-multigpu-lora").path.read_text()
    assert main(["presets", "--show", "no-such-preset"]) == 2
    assert "no preset of that name" in capsys.readouterr().err


def test_tuner_presets_gpus_without_vram_on_a_gpu_less_machine_says_what_to_add(capsys, monkeypatch):
    monkeypatch.setattr("tuner.engine.hardware.probe", lambda path=".": describe(0, 0))
    assert main(["presets", "--gpus", "2"]) == 2
    assert "--vram-gb" in capsys.readouterr().err
