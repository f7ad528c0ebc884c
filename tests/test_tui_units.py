"""The wizard's pure helpers: the dataset scan's verdicts and the prompt library text format."""
from __future__ import annotations

from tuner.engine.demo import make_dataset
from tuner.tui.dataset_scan import scan_folder
from tuner.tui.prompt_library import PORTRAIT_TEMPLATE, from_text, portrait_prompts, to_text

CONFIG = {"model_family": "sana", "resolution": 64, "resolution_type": "pixel", "train_batch_size": 4,
          "gradient_accumulation_steps": 2}


def test_scan_counts_buckets_and_names_what_would_fail(tmp_path):
    folder = make_dataset(tmp_path / "shapes", count=3)
    (folder / "broken.png").write_bytes(b"not a png")
    uncaptioned = sorted(folder.glob("*.txt"))[0]
    uncaptioned.unlink()
    report = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True}, CONFIG)
    assert (report.found, report.usable) == (4, 2)
    assert report.buckets == {(64, 64): 2}
    assert any("broken.png" in w for w in report.warnings)
    assert any(uncaptioned.with_suffix(".png").name in w for w in report.warnings)
    # 2 images × (repeats + 1) must reach batch 4 × accumulation 2 = 8 samples: repeats 3.
    assert report.suggested_repeats == 3 and "set repeats to 3" in report.errors[0]
    fixed = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True,
                         "repeats": 3}, CONFIG)
    assert fixed.errors == []


def test_scan_says_how_many_samples_each_epoch_leaves_out(tmp_path):
    """The engine fills only whole batches per bucket: 5 images in one bucket and batch 4 leave 1 out."""
    folder = make_dataset(tmp_path / "shapes", count=5)
    report = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True},
                         {**CONFIG, "gradient_accumulation_steps": 1})
    assert report.errors == [] and report.dropped == 1
    [warning] = report.warnings
    assert "1 of 5 samples per epoch are left out" in warning and "64×64: 1 left over" in warning
    # repeats 3: 20 samples fill 5 batches of 4.
    even = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True,
                        "repeats": 3}, {**CONFIG, "gradient_accumulation_steps": 1})
    assert even.dropped == 0 and even.warnings == []


def test_scan_of_a_missing_folder_says_so(tmp_path):
    report = scan_folder({"instance_data_dir": str(tmp_path / "nope")}, CONFIG)
    assert report.errors == [f"{tmp_path / 'nope'} does not exist"] and report.folder_problem == report.errors[0]


def test_portrait_template_and_library_text_round_trip():
    prompts = portrait_prompts("sks woman")
    assert len(PORTRAIT_TEMPLATE) == 15 and len(prompts) == 15
    assert all("sks woman" in p and "<token>" not in p for p in prompts.values())
    assert from_text(to_text(prompts)) == (prompts, [])
    # A slash in a nickname is the engine's warning (its files get a safe name), not the wizard's refusal.
    library, problems = from_text("a/b = slash in a nickname\nno separator here\nx = one\nx = two\n = no name")
    assert len(problems) == 3 and library["a/b"] == "slash in a nickname"


def test_scan_of_letters_as_resolution_says_what_to_type(tmp_path):
    # The wizard's field holds text until Next checks it; the scan must say so, not crash its worker.
    folder = make_dataset(tmp_path / "shapes", count=3)
    report = scan_folder({"instance_data_dir": str(folder), "resolution": "abc"}, CONFIG)
    assert report.errors == ["resolution: got 'abc'; expected a number"]


def test_scan_uses_the_dataset_resolution_else_the_configs(tmp_path):
    folder = make_dataset(tmp_path / "shapes", count=2, size=128)
    own = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True,
                       "resolution": 96}, CONFIG)
    inherited = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True}, CONFIG)
    assert set(own.buckets) == {(96, 96)} and set(inherited.buckets) == {(64, 64)}


def test_scan_of_a_bad_aspect_bucket_names_it(tmp_path):
    folder = make_dataset(tmp_path / "shapes", count=2)
    report = scan_folder({"instance_data_dir": str(folder), "caption_strategy": "textfile", "crop": True,
                          "crop_aspect": "closest", "crop_aspect_buckets": [1.0, -2]}, CONFIG)
    assert len(report.errors) == 1 and "crop_aspect_buckets entry -2" in report.errors[0]


def test_taking_a_preset_keeps_a_typed_model_folder_and_switching_drops_the_first_presets_keys(tmp_path):
    from tuner.presets import load_preset
    from tuner.tui.wizard_state import WizardState

    state = WizardState(hardware=None)
    state.config.update(model_family="sd3", pretrained_model_name_or_path=str(tmp_path / "my-sd3"))
    state.take_preset(load_preset("sd35-large-12gb-lora-nf4"))
    assert state.config["pretrained_model_name_or_path"] == str(tmp_path / "my-sd3")
    assert state.config["base_model_precision"] == "nf4-bnb"
    assert state.config["quantize_via"] == "cpu"
    state.take_preset(load_preset("sd35-medium-24gb-lora"))
    assert "quantize_via" not in load_preset("sd35-medium-24gb-lora").config
    assert "quantize_via" not in state.config   # the 12 GB preset's key went with it
    assert state.config["base_model_precision"] == "no_change"
    assert state.config["pretrained_model_name_or_path"] == str(tmp_path / "my-sd3")


def test_a_published_model_follows_the_preset_and_an_edited_key_survives_a_switch():
    from tuner.presets import load_preset
    from tuner.tui.wizard_state import WizardState

    state = WizardState(hardware=None)
    state.config.update(model_family="sd3", pretrained_model_name_or_path="stabilityai/stable-diffusion-3.5-large")
    state.take_preset(load_preset("sd35-large-12gb-lora-nf4"))
    state.config["quantize_via"] = "accelerator"   # the user's own edit after taking it
    state.take_preset(load_preset("sd35-medium-24gb-lora"))
    assert state.config["pretrained_model_name_or_path"] == "stabilityai/stable-diffusion-3.5-medium"
    assert state.config["quantize_via"] == "accelerator"
