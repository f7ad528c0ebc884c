"""One path from a config folder (or the wizard's values) to a job folder: tunerd submit, the
wizard's review and `tuner train` write the same bytes, and the review's verdict is check_bundle's."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tuner.daemon import submit
from tuner.engine.config import check_bundle, job_files, write_job_files
from tuner.engine.config.jobfiles import FILE_NAMES
from tuner.engine.demo import make_dataset
from tuner.engine.hardware import describe
from tuner.engine.runner import EXIT_FAILED, run
from tuner.tui.wizard_state import WizardState, from_folder, new_dataset

MODEL = "terminusresearch/sana-1.6b-1024px"   # a hub id: never made a path
VAE = "mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SimpleTuner-style layout run from its root: config/ with relative paths and `--` keys."""
    make_dataset(tmp_path / "datasets" / "shapes", count=4)
    (tmp_path / "models" / "sana").mkdir(parents=True)   # a local folder (empty: it cannot load)
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({
        "--model_family": "sana", "model_type": "full", "--pretrained_model_name_or_path": "models/sana",
        "pretrained_vae_model_name_or_path": VAE, "--output_dir": "output/run", "max_train_steps": 10,
        "validation_prompt": "a red circle", "--data_backend_config": "config/multidatabackend.json",
        "--push_to_hub": False}))
    (config / "multidatabackend.json").write_text(json.dumps([
        {"id": "shapes", "type": "local", "instance_data_dir": "datasets/shapes", "caption_strategy": "textfile",
         "cache_dir_vae": "cache/vae/shapes"},
        {"id": "text-embeds", "type": "local", "dataset_type": "text_embeds", "default": True,
         "cache_dir": "cache/text"}]))
    (config / "user_prompt_library.json").write_text(json.dumps({"red": "a red circle"}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def submitted(folder: Path, cwd: Path, jobs: Path) -> dict[str, bytes]:
    """The job files `tunerd submit FOLDER` writes (jobs/j1), read back and the job folder removed."""
    staging = jobs / ".staging-j1"
    staging.mkdir(parents=True)
    job = submit.stage("j1", staging, submit.read_bundle(folder, cwd), str(folder), "j1", 1)
    files = {name: (Path(job.dir) / name).read_bytes() for name in FILE_NAMES}
    shutil.rmtree(job.dir)
    return files


def test_tunerd_and_the_wizard_write_byte_identical_job_files(root: Path) -> None:
    jobs = root / "jobs"
    direct = submitted(root / "config", root, jobs)

    # The wizard opens the folder, checks its values in memory and writes what the review writes.
    state = from_folder(root / "config", describe(24, 1))
    bundle, issues = state.check()
    assert bundle is not None, issues
    target = root / "edited"
    write_job_files(job_files(bundle, target), target)
    # What the wizard wrote is the function's output for tunerd's own reading of the folder ...
    elsewhere = root / "elsewhere"
    write_job_files(job_files(submit.read_bundle(root / "config", root), target), elsewhere)
    for name in FILE_NAMES:
        assert (target / name).read_bytes() == (elsewhere / name).read_bytes(), name
    # ... and submitting it queues the same job as submitting the original folder.
    assert submitted(target, target, jobs) == direct

    config = json.loads(direct["config.json"])
    assert config["output_dir"] == str(root / "output" / "run")
    assert config["pretrained_model_name_or_path"] == str(root / "models" / "sana")
    assert config["pretrained_vae_model_name_or_path"] == VAE
    assert config["data_backend_config"] == str(jobs / "j1" / "multidatabackend.json")
    assert "push_to_hub" in config and not any(k.startswith("--") for k in config)
    datasets = json.loads(direct["multidatabackend.json"])
    assert datasets[0]["instance_data_dir"] == str(root / "datasets" / "shapes")
    assert datasets[1]["cache_dir"] == str(root / "cache" / "text")


def test_tuner_train_runs_the_same_job_files_as_tunerd(root: Path) -> None:
    direct = submitted(root / "config", root, root / "jobs")
    # The empty model folder cannot load: the run fails after writing its job files, before training.
    job_dir = root / "output" / "run"
    assert run(root / "config", job_dir) == EXIT_FAILED
    events = [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]
    assert [e["phase"] for e in events if e["type"] == "status"] == ["loading", "failed"]
    for name in FILE_NAMES:
        text = (job_dir / name).read_text()
        assert text == direct[name].decode().replace(str(root / "jobs" / "j1"), str(job_dir)), name


def test_the_reviews_verdict_is_check_bundle_on_the_written_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path / "shapes", count=4)
    monkeypatch.chdir(tmp_path)   # a relative path typed into the wizard is read from where it runs
    state = WizardState(hardware=describe(24, 1), datasets=[{**new_dataset(), "instance_data_dir": "shapes"}],
                        prompts={"red": "a red circle"},
                        config={"model_family": "sana", "model_type": "full", "output_dir": "out",
                                "pretrained_model_name_or_path": MODEL, "validation_prompt": "a red circle",
                                "noise_offset": 0.1, "learning_rate": "fast"})
    bundle, issues = state.check()
    assert bundle is None and [i.key for i in issues if i.level == "error"] == ["learning_rate"]
    assert {i.file for i in issues} == {"config.json"}   # the plain names, as the review shows them
    state.config["learning_rate"] = 1e-4
    bundle, issues = state.check()
    assert bundle is not None and issues and all(i.level == "warning" for i in issues), issues
    target = tmp_path / "written"
    write_job_files(job_files(bundle, target), target)
    monkeypatch.chdir(tmp_path / "shapes")   # the written folder runs from anywhere
    written = check_bundle(target, hardware=describe(24, 1))

    def plain(found: list) -> list[tuple]:
        return [(i.level, Path(i.file).name, i.key, i.message) for i in found]

    assert plain(issues) == plain(written)
    datasets = json.loads((target / "multidatabackend.json").read_text())
    assert datasets[0]["instance_data_dir"] == str(tmp_path / "shapes")
    assert json.loads((target / "config.json").read_text())["output_dir"] == str(tmp_path / "out")


def test_tuner_train_never_overwrites_a_config_it_did_not_write(root: Path) -> None:
    other = root / "output" / "run"
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"model_family": "sd3"}\n')   # the user's own file
    seen = []
    assert run(root / "config", other, listener=seen.append) == EXIT_FAILED
    assert (other / "config.json").read_text() == '{"model_family": "sd3"}\n'
    assert not (other / "events.jsonl").exists() and not (other / "multidatabackend.json").exists()
    assert "set output_dir to another folder" in next(e["message"] for e in seen if e["type"] == "error")
