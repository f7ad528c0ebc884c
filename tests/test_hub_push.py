"""push_to_hub and `tuner push` where no Hub can be reached: the run still succeeds, the user is told once
what did not happen and the command that pushes later, and `tuner push` fails with one clear line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from engine_fixtures import copy_config_into, demo_config, events_of
from tuner.engine import model_card
from tuner.engine.runner import EXIT_DONE, run

UNREACHABLE = "http://127.0.0.1:9"   # the discard port: nothing listens, a connection is refused at once


def hub_env(tmp: Path, *, offline: bool = False, token: str | None = "hf_not_a_real_token") -> dict[str, str]:
    """An environment whose Hub is out of reach, with no login but the one given (none stored in HF_HOME)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")}
    env.update(HF_HUB_OFFLINE="1" if offline else "0", HF_ENDPOINT=UNREACHABLE, HF_HOME=str(tmp / "hf-home"),
               OMP_NUM_THREADS="1")
    if token:
        env["HF_TOKEN"] = token
    return env


def warnings_of(job: Path) -> list[str]:
    return [e["message"] for e in events_of(job, "log") if e["level"] == "warning"]


def test_offline_run_with_push_to_hub_succeeds_and_says_how_to_push_later(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=2, checkpoint_step_interval=1, push_to_hub=True,
                         push_checkpoints_to_hub=True, hub_model_id="me/tiny-shapes", validation_disable=False,
                         validation_num_inference_steps=2)
    assert run(config, tmp_path / "job") == EXIT_DONE   # HF_HUB_OFFLINE=1, as in every test
    output = tmp_path / "output"
    pushes = [w for w in warnings_of(tmp_path / "job") if "push_to_hub" in w]
    assert len(pushes) == 1, pushes
    assert "HF_HUB_OFFLINE is set" in pushes[0]
    assert f"`tuner push {output} --repo me/tiny-shapes --checkpoints`" in pushes[0]
    card = output / "pipeline" / "README.md"
    assert model_card.front_matter(card)["library_name"] == "diffusers"
    assert f"`{tiny_sana}`" in card.read_text()   # the base model, named in the card
    # Nothing of the run was moved or added for the upload that did not happen.
    assert {p.name for p in output.iterdir()} >= {"pipeline", "checkpoint-1", "checkpoint-2", "validation_images"}
    assert not list(output.rglob(".cache"))


def test_uploads_that_fail_on_the_network_are_one_warning_and_the_run_exits_0(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=2, checkpoint_step_interval=1, push_to_hub=True,
                         push_checkpoints_to_hub=True, hub_model_id="me/tiny-shapes")
    job = copy_config_into(config, tmp_path / "job")
    done = subprocess.run([sys.executable, "-m", "tuner.engine", str(job)], env=hub_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_DONE, done.stderr[-3000:]
    pushes = [w for w in warnings_of(job) if "push_to_hub" in w]
    assert len(pushes) == 1, pushes   # two checkpoints and the pipeline: one warning, no retries
    assert f"cannot reach {UNREACHABLE}" in pushes[0]
    assert f"`tuner push {tmp_path / 'output'} --repo me/tiny-shapes --checkpoints`" in pushes[0]
    assert any("uploading checkpoint-1" in e["message"] for e in events_of(job, "log"))
    assert (tmp_path / "output" / "pipeline" / "README.md").is_file()


def push(tmp: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner.engine.cli", "push", *args], env=hub_env(tmp, **env),
                          capture_output=True, text=True, timeout=120)


def exported_run(tmp: Path) -> Path:
    (tmp / "out" / "pipeline").mkdir(parents=True)
    (tmp / "out" / "pipeline" / "README.md").write_text("---\nlibrary_name: diffusers\n---\n")
    (tmp / "out" / "pipeline" / "lycoris_weights.safetensors").write_bytes(b"\0" * 64)
    return tmp / "out"


def test_tuner_push_to_an_unreachable_hub_is_one_clear_error(tmp_path):
    done = push(tmp_path, str(exported_run(tmp_path)), "--repo", "me/x")
    assert done.returncode == 1
    assert f"tuner push: could not upload {tmp_path / 'out' / 'pipeline'} to me/x: cannot reach {UNREACHABLE}" \
        in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_tuner_push_without_a_login_says_how_to_log_in(tmp_path):
    done = push(tmp_path, str(exported_run(tmp_path)), token=None)
    assert done.returncode == 1
    assert "not logged in to the Hugging Face Hub (run `hf auth login`, or set HF_TOKEN)" in done.stderr
    assert "Traceback" not in done.stderr


def test_tuner_push_offline_and_of_a_folder_with_nothing_to_push(tmp_path):
    done = push(tmp_path, str(exported_run(tmp_path)), offline=True)
    assert done.returncode == 1 and "HF_HUB_OFFLINE is set" in done.stderr
    (tmp_path / "empty").mkdir()
    done = push(tmp_path, str(tmp_path / "empty"))
    assert done.returncode == 1 and "holds no pipeline/ or pipeline-ema/ folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_rotation_keeps_a_checkpoint_until_its_upload_is_done(tmp_path, tiny_sana, monkeypatch):
    """checkpoints_total_limit 1 with checkpoints pushed: an upload slower than a step must still find its folder."""
    import time

    from engine_fixtures import train_config
    from tuner.engine import hub

    found = {}

    def slow_upload(repo, folder, path_in_repo, message, private=True):
        time.sleep(0.6)   # a large checkpoint on a slow line: the run writes the next ones meanwhile
        found[path_in_repo] = (folder / "checkpoint.json").is_file() if path_in_repo.startswith("checkpoint-") \
            else folder.is_dir()
        return f"https://huggingface.co/{repo}/tree/main/{path_in_repo}"

    monkeypatch.setattr(hub, "why_not_now", lambda: None)
    monkeypatch.setattr(hub, "upload", slow_upload)
    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, checkpoint_step_interval=1, checkpoints_total_limit=1,
                         push_to_hub=True, push_checkpoints_to_hub=True, hub_model_id="me/tiny-shapes")
    train_config(config, tmp_path / "job")
    assert found == {"checkpoint-1": True, "checkpoint-2": True, "checkpoint-3": True, "checkpoint-4": True,
                     "": True}, found
    # Once the uploads are done, the limit holds again.
    assert sorted(p.name for p in (tmp_path / "output").glob("checkpoint-*")) == ["checkpoint-4"]
