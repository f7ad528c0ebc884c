"""Out of GPU memory is a message that says where and what to change, not a traceback.

There is no GPU here: the model's forward raises torch's own OutOfMemoryError at the third step,
as CUDA's allocator does, and the rest is the real engine."""
from __future__ import annotations

import torch

from engine_fixtures import demo_config, edit_config, events_of
from tuner.engine.models.sana import SanaFamily
from tuner.engine.runner import EXIT_FAILED, run


def test_running_out_of_memory_names_the_step_and_the_settings_that_fit(tmp_path, tiny_sana, monkeypatch) -> None:
    config = demo_config(tmp_path, tiny_sana, max_train_steps=6, checkpoint_step_interval=2, train_batch_size=2,
                         optimizer="adamw")
    edit_config(config, gradient_checkpointing=False)
    real = SanaFamily.predict
    calls = []

    def predict(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SanaFamily, "predict", predict)
    job = tmp_path / "job"
    assert run(config, job) == EXIT_FAILED
    [error] = events_of(job, "error")
    message = error["message"]
    assert message.startswith("out of GPU memory after step 2, while training.")
    assert "gradient_checkpointing: true" in message
    assert "train_batch_size: 1 with gradient_accumulation_steps: 2 (the same effective batch)" in message
    assert "optimizer: bnb-adamw8bit" in message
    assert message.endswith("Then resume with resume_from_checkpoint: latest (from checkpoint-2).")
    assert "CUDA out of memory" in (job / "traceback.txt").read_text()  # the details are kept
    assert events_of(job, "status")[-1]["phase"] == "failed"
