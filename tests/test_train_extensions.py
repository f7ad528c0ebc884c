"""The loop's extension points on the tiny Sana: a tracker sink sees what the events file says, and a
loss term beside the flow loss adds its loss, trains its parameter and resumes from checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine_fixtures import demo_config, edit_config, events_of, train_config
from tuner.engine.train import loop


class Recorder:
    """A made-up tracker: keeps everything the loop hands it."""

    def __init__(self, fail_at: int | None = None):
        self.steps: list[tuple[int, dict]] = []
        self.samples: list[tuple[int, object]] = []
        self.closed = 0
        self.fail_at = fail_at

    def log(self, step, metrics):
        self.steps.append((step, dict(metrics)))
        if step == self.fail_at:
            raise RuntimeError("tracker lost its connection")

    def log_samples(self, step, samples):
        self.samples.append((step, samples))

    def close(self):
        self.closed += 1


def test_a_tracker_sink_gets_every_step_and_the_figures_of_the_events_file(tmp_path, tiny_sana):
    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, validation_disable=False,
                         validation_step_interval=2, validation_num_inference_steps=2, validation_resolution="32")
    job = tmp_path / "job"
    tracker = Recorder()
    result = train_config(config, job, sinks=[tracker])

    assert [(step, metrics["loss"]) for step, metrics in tracker.steps] == result.losses
    logged = dict(tracker.steps)
    progress = events_of(job, "progress")
    assert progress, "the events file got no progress events"
    for event in progress:  # the events file is throttled; what it holds, the tracker got too
        keys = ("epoch", "loss", "lr", "grad_norm")
        assert {k: event[k] for k in keys} == {k: logged[event["step"]][k] for k in keys}
    validation = events_of(job, "validation")
    assert len(validation) >= 2
    assert [(s, x.nickname, x.prompt, [str(p) for p in x.paths]) for s, x in tracker.samples] == \
        [(e["step"], e["nickname"], e["prompt"], e["paths"]) for e in validation]
    assert tracker.closed == 1


def test_sinks_are_closed_when_the_run_fails(tmp_path, tiny_sana):
    tracker = Recorder(fail_at=2)
    with pytest.raises(RuntimeError, match="lost its connection"):
        train_config(demo_config(tmp_path, tiny_sana, max_train_steps=4), tmp_path / "job", sinks=[tracker])
    assert tracker.closed == 1


class Pull:
    """A made-up loss term: a learnable scalar pulled towards 3, kept in its own checkpoint file."""

    name = "pull"
    FILE = "pull.safetensors"

    def __init__(self, cfg, family, model, device):
        self.weight = torch.nn.Parameter(torch.zeros((), device=device))

    def parameters(self):
        return [self.weight]

    def loss(self, inputs):
        assert inputs.prediction.shape == inputs.latents.shape
        return (self.weight - 3.0) ** 2

    def save(self, folder):
        save_file({"weight": self.weight.detach().cpu()}, str(Path(folder) / self.FILE))

    def load(self, folder):
        with torch.no_grad():
            self.weight.copy_(load_file(str(Path(folder) / self.FILE))["weight"])


def test_a_loss_term_adds_its_loss_trains_and_resumes(tmp_path, tiny_sana, monkeypatch):
    plain = train_config(demo_config(tmp_path / "plain", tiny_sana, max_train_steps=4), tmp_path / "plain" / "job")
    # The loop's list of terms holds CREPA when crepa_enabled: let the made-up term stand in for it.
    monkeypatch.setattr(loop, "CREPA", Pull)
    straight = train_config(demo_config(tmp_path / "a", tiny_sana, max_train_steps=4, crepa_enabled=True),
                            tmp_path / "a" / "job")

    # The model trains as before, so the difference is the term's own loss: 9 at first, falling as it trains.
    added = [with_term - without for (_, with_term), (_, without) in zip(straight.losses, plain.losses)]
    assert added[0] == pytest.approx(9.0, abs=1e-4)
    assert all(later < earlier for earlier, later in zip(added, added[1:])), added
    assert 0 < float(load_file(str(straight.checkpoint / Pull.FILE))["weight"]) < 3

    split = demo_config(tmp_path / "b", tiny_sana, max_train_steps=4, crepa_enabled=True)
    assert train_config(split, tmp_path / "b" / "job", stop_after=2).stopped
    edit_config(split, resume_from_checkpoint="latest")
    resumed = train_config(split, tmp_path / "b" / "job")
    for (step, expected), (_, got) in zip(straight.losses[2:], resumed.losses):
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), f"step {step} differs after resume"
