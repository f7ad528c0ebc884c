"""The Sana engine end to end on the tiny model: it learns, resumes exactly, validates, exports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine_fixtures import copy_config_into, demo_config, edit_config, events_of, launch_two_processes, train_config
from tuner.engine.jobdir import request
from tuner.engine.runner import EXIT_DONE, EXIT_FAILED, EXIT_STOPPED, run
from tuner.engine.train import checkpoint


def test_overfit_four_images_loss_falls(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, images=4, max_train_steps=120, train_batch_size=4,
                         learning_rate=2e-3, optimizer="adamw", flow_use_uniform_schedule=False)
    result = train_config(config, tmp_path / "job")
    losses = [loss for _, loss in result.losses]
    start, end = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert len(losses) == 120
    assert end < 0.5 * start, f"loss did not halve: first 10 steps {start:.3f}, last 10 {end:.3f}"


def test_resume_continues_exactly(tmp_path, tiny_sana):
    straight = demo_config(tmp_path / "a", tiny_sana, max_train_steps=10, caption_dropout_probability=0.3,
                           use_ema=True)
    full = train_config(straight, tmp_path / "a" / "job").losses

    split = demo_config(tmp_path / "b", tiny_sana, max_train_steps=10, caption_dropout_probability=0.3,
                        use_ema=True)
    first = train_config(split, tmp_path / "b" / "job", stop_after=5)
    assert first.stopped and first.step == 5
    edit_config(split, resume_from_checkpoint="latest")
    second = train_config(split, tmp_path / "b" / "job")
    assert [s for s, _ in second.losses] == list(range(6, 11))
    for (step, expected), (_, got) in zip(full[5:], second.losses):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6), f"step {step} differs after resume"


def test_output_pipeline_loads_in_diffusers_and_generates(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=3)
    result = train_config(config, tmp_path / "job")
    from diffusers import SanaPipeline

    pipe = SanaPipeline.from_pretrained(result.pipeline)
    image = pipe("a red circle", num_inference_steps=2, height=64, width=64, use_resolution_binning=False,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    trained = pipe.transformer.state_dict()
    base = SanaPipeline.from_pretrained(tiny_sana).transformer.state_dict()
    assert any(not torch.equal(trained[k], base[k]) for k in base), "the exported weights are the untrained ones"


def test_validation_and_previews_in_expected_numbers(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, validation_disable=False,
                         validation_step_interval=2, validation_num_inference_steps=20,
                         validation_preview=True, validation_preview_steps=5, validation_resolution="64,64x32",
                         use_ema=True, ema_validation="comparison")
    job = tmp_path / "job"
    train_config(config, job)
    prompts = 1 + len(json.loads((config / "user_prompt_library.json").read_text()))
    # validations at steps 2 and 4; each: prompts × (trained, EMA) × 2 resolutions
    images = sorted((tmp_path / "output" / "validation_images").rglob("*.png"))
    assert len(images) == 2 * prompts * 2 * 2
    assert {p.parent.name for p in images} == {"step-000002", "step-000004"}
    validation_events = events_of(job, "validation")
    assert len(validation_events) == 2 * prompts * 2
    previews = events_of(job, "preview")
    assert [e["k"] for e in previews[:4]] == [5, 10, 15, 20]
    assert len(previews) == len(images) * 4
    assert all(Path(e["path"]).is_file() for e in previews)


def test_num_validation_images_samples_each_prompt_that_many_times_with_their_own_seeds(tmp_path, tiny_sana):
    from PIL import Image

    config = demo_config(tmp_path, tiny_sana, max_train_steps=1, validation_disable=False,
                         validation_num_inference_steps=3, num_validation_images=3, validation_preview=True,
                         validation_preview_steps=1)
    job = tmp_path / "job"
    train_config(config, job)
    folder = tmp_path / "output" / "validation_images" / "step-000001"
    prompts = 1 + len(json.loads((config / "user_prompt_library.json").read_text()))
    images = sorted(folder.glob("validation-64x64*.png"))
    assert [p.name for p in images] == ["validation-64x64-2.png", "validation-64x64-3.png", "validation-64x64.png"]
    assert len(list(folder.glob("*.png"))) == 3 * prompts
    pixels = [Image.open(p).tobytes() for p in images]
    assert len(set(pixels)) == 3   # seed, seed + 1, seed + 2
    [event] = [e for e in events_of(job, "validation") if e["nickname"] == "validation"]
    assert len(event["paths"]) == 3
    # Previews follow the first sample of each prompt only: 3 steps × prompts.
    assert len(events_of(job, "preview")) == 3 * prompts


def test_control_requests_stop_with_a_checkpoint(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=50)
    job = tmp_path / "job"
    request(job, "save")
    request(job, "stop")
    code = run(config, job)
    assert code == EXIT_STOPPED
    latest = checkpoint.find_latest(tmp_path / "output")
    assert latest is not None and latest.name == "checkpoint-1"
    assert events_of(job, "status")[-1]["phase"] == "stopped"
    assert not (job / "control" / "stop").exists()


def test_non_finite_losses_stop_the_run_with_a_clear_error(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=30, learning_rate=1e30, max_nan_steps=3,
                         optimizer="adamw", max_grad_norm=0.0)
    job = tmp_path / "job"
    code = run(config, job)
    assert code == EXIT_FAILED
    errors = events_of(job, "error")
    assert errors and "non-finite losses in a row" in errors[-1]["message"]
    assert "learning_rate" in errors[-1]["message"]
    assert any("update skipped" in e["message"] for e in events_of(job, "log"))


def test_bad_config_fails_before_loading_anything(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana)
    edit_config(config, learning_rte=1e-4)
    job = tmp_path / "job"
    assert run(config, job) == EXIT_FAILED
    logs = [e["message"] for e in events_of(job, "log")]
    assert any("learning_rte" in m and "learning_rate" in m for m in logs)
    assert not any(e.get("phase") == "loading" for e in events_of(job, "status"))


def test_killed_during_checkpoint_save_leaves_a_loadable_latest(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=6, checkpoint_step_interval=2)
    train_config(config, tmp_path / "job", stop_after=2)
    output = tmp_path / "output"
    assert checkpoint.find_latest(output).name == "checkpoint-2"
    # A child process writes the next checkpoint with the real code, slowed inside the write;
    # it is killed half-way through.
    script = f"""
import time, torch, safetensors.torch as st
from pathlib import Path
from tuner.engine.train import checkpoint
real = st.save_file
def slow(*a, **k):
    real(*a, **k); print("wrote", flush=True); time.sleep(30)
checkpoint.save_file = slow
model = torch.nn.Linear(2, 2)
opt = torch.optim.AdamW(model.parameters())
tmp = checkpoint.begin(Path({str(output)!r}), 4)
checkpoint.write_main(tmp, model=model, optimizer=opt, scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1), ema=None, state={{}})
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "wrote"
    child.kill()
    child.wait()
    assert (output / ".checkpoint-4.tmp").is_dir()
    assert checkpoint.find_latest(output).name == "checkpoint-2"
    edit_config(config, resume_from_checkpoint="latest")
    result = train_config(config, tmp_path / "job")
    assert result.losses[0][0] == 3 and result.step == 6


@pytest.mark.slow
def test_two_processes_train_the_right_global_step_count(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=6, train_batch_size=2, checkpoint_step_interval=3)
    job = copy_config_into(config, tmp_path / "job")
    proc = launch_two_processes(job)
    assert proc.returncode == 0, proc.stderr[-3000:]
    progress = events_of(job, "progress")
    assert progress[-1]["step"] == 6 and progress[-1]["total"] == 6
    assert events_of(job, "status")[-1]["phase"] == "done"
    steps = [s for s, _ in checkpoint.checkpoint_dirs(tmp_path / "output")]
    assert steps == [3, 6]
    # one writer: the event sequence has no gaps or duplicates
    seqs = [e["seq"] for e in events_of(job)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sorted(p.name for p in (tmp_path / "output" / "checkpoint-6").glob("rng-*.safetensors")) == [
        "rng-0.safetensors", "rng-1.safetensors"]


def test_a_fresh_run_refuses_an_output_dir_with_an_earlier_runs_checkpoints(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=2)
    assert run(config, tmp_path / "job") == EXIT_DONE
    before = sorted(p.name for p in (tmp_path / "output").iterdir())
    assert run(config, tmp_path / "job2") == EXIT_FAILED
    message = events_of(tmp_path / "job2", "error")[-1]["message"]
    assert "already holds checkpoints" in message and "resume_from_checkpoint" in message
    assert sorted(p.name for p in (tmp_path / "output").iterdir()) == before


def test_engine_warnings_reach_the_event_stream(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=1, optimizer="bnb-lion8bit-paged",
                         mixed_precision="no")
    assert run(config, tmp_path / "job") == EXIT_DONE
    warnings = [e["message"] for e in events_of(tmp_path / "job", "log") if e["level"] == "warning"]
    assert any("paged" in m.lower() for m in warnings), warnings


def test_value_clipping_the_default_still_reports_the_gradient_norm(tmp_path, tiny_sana, monkeypatch):
    """SimpleTuner's default clips each value; the norm before clipping is still measured and shown."""
    largest = []
    step = torch.optim.AdamW.step

    def measured(self, *args, **kwargs):
        largest.append(max(float(p.grad.abs().max()) for g in self.param_groups for p in g["params"]
                           if p.grad is not None))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", measured)
    config = demo_config(tmp_path, tiny_sana, max_train_steps=3, optimizer="adamw", max_grad_norm=1e-4)
    train_config(config, tmp_path / "job")
    norms = [e["grad_norm"] for e in events_of(tmp_path / "job", "progress")]
    assert norms and all(isinstance(n, float) and n > 1e-4 for n in norms), norms   # progress is throttled
    assert all(v <= 1e-4 for v in largest), largest   # every value clipped to max_grad_norm
