"""Adding a family is one card: `tuner check`, the wizard's model step and the VRAM estimate see it at once."""
from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest
from textual.widgets import Select

from tuner.engine import families, vram
from tuner.engine.config import check_bundle
from tuner.engine.config.check import command as tuner_check
from tuner.engine.demo import make_dataset
from tuner.engine.families import FamilyCard, ModelSize
from tuner.engine.hardware import describe
from tuner.tui.app import TunerApp
from tuner.tui.screens.step_model import ModelStep

TOY = FamilyCard(
    name="toyflow", label="Toy Flow", engine="toyflow.engine:ToyFamily", media="image",
    sizes=(ModelSize("toyflow-3b", "example/toyflow-3b", ("toyflow",), params=3.0e9, layers=30, hidden=2048,
                     attn_modules=4, vae_factor=8, patch=2, text_encoders=(1.0e9,), vae_params=0.1e9),),
    pixel_alignment=16, training_types=("lora",), adapter_targets=("to_q", "to_v"), text_max_length=128,
    note="Toy Flow trains LoRA adapters.",
)


@pytest.fixture
def toy_card():
    families.register(TOY)
    yield TOY
    families.unregister(TOY.name)


def config_folder(tmp: Path, **config) -> Path:
    folder = tmp / "config"
    folder.mkdir(parents=True)
    images = make_dataset(tmp / "images", count=2)
    (folder / "config.json").write_text(json.dumps({"output_dir": str(tmp / "out"), "validation_disable": True,
                                                    **config}))
    (folder / "multidatabackend.json").write_text(json.dumps([
        {"id": "shapes", "instance_data_dir": str(images), "caption_strategy": "textfile"},
        {"id": "text", "dataset_type": "text_embeds", "default": True, "cache_dir": str(tmp / "text")}]))
    return folder


def test_tuner_check_offers_a_registered_family(toy_card, tmp_path, capsys):
    code = tuner_check(Namespace(path=config_folder(tmp_path, model_family="toyflw"), json=False, no_data=True))
    out = capsys.readouterr().out
    assert code == 1
    assert "model_family: got 'toyflw'; allowed values: sana, sanavideo, sd3, toyflow; did you mean 'toyflow'?" in out


def test_the_cards_rules_judge_a_registered_family(toy_card, tmp_path):
    assert check_bundle(config_folder(tmp_path, model_family="toyflow", model_type="lora",
                                      lora_type="standard")) == []
    issues = check_bundle(config_folder(tmp_path / "full", model_family="toyflow", model_type="full"))
    assert [(i.key, i.message) for i in issues] == [
        ("model_type", "Toy Flow does not train full-rank; set model_type: lora")]


def test_the_vram_estimate_sizes_a_registered_family(toy_card):
    est = vram.estimate({"model_family": "toyflow", "model_type": "lora", "mixed_precision": "bf16"})
    assert est["parts"]["weights"] == pytest.approx(3.0e9 * 2 / vram.GB, rel=1e-3)
    # 30 layers × 4 projections × rank 16 × (2048 in + 2048 out)
    assert "7.9 M trainable weights" in est["assumptions"][-1]
    # 1024² px / (VAE 8 × patch 2)² = 4096 tokens
    assert "4096 tokens per sample" in est["assumptions"][-1]


async def test_the_wizard_offers_a_registered_family(toy_card, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNER_RUNTIME_DIR", str(tmp_path / "run"))
    app = TunerApp(hardware=describe(24, 1))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("ctrl+n")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ModelStep)
        family = screen.query_one("#family", Select)
        assert ("Toy Flow", "toyflow") in [(str(label), value) for label, value in family._options]
        family.value = "toyflow"
        await pilot.pause()
        await pilot.pause()
        assert str(screen.query_one("#model").value) == "example/toyflow-3b"
        training = screen.query_one("#training", Select)
        assert [value for _label, value in training._options] == ["lora"]
        assert "Toy Flow trains LoRA adapters." in str(screen.query_one("#model-help").render())


def test_each_card_names_the_pipeline_its_model_folders_hold(tiny_sana, tiny_sd3, tiny_sanavideo):
    """The card's pipeline is what `tuner check` compares a local model folder's model_index.json with."""
    for name, folder in (("sana", tiny_sana), ("sd3", tiny_sd3), ("sanavideo", tiny_sanavideo)):
        card = families.card(name)
        assert card.engine_class().pipeline_class.fget(None).__name__ == card.pipeline
        assert json.loads((Path(folder) / "model_index.json").read_text())["_class_name"] == card.pipeline
