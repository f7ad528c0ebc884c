"""A damaged checkpoint (a machine crash, a copy cut short) is skipped on resume, said, and kept."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine_fixtures import demo_config, edit_config, events_of, train_config
from tuner.engine import checkpoints


def cut_short(path: Path, keep: int = 100) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_a_truncated_latest_checkpoint_is_skipped_and_the_run_resumes_exactly(tmp_path, tiny_sana) -> None:
    whole = demo_config(tmp_path / "whole", tiny_sana, max_train_steps=6, checkpoint_step_interval=2)
    uninterrupted = dict(train_config(whole, tmp_path / "whole" / "job").losses)

    config = demo_config(tmp_path / "crash", tiny_sana, max_train_steps=6, checkpoint_step_interval=2)
    train_config(config, tmp_path / "crash" / "job", stop_after=4)
    output = tmp_path / "crash" / "output"
    cut_short(output / "checkpoint-4" / "trainable.safetensors")
    assert "trainable.safetensors is 100 bytes" in checkpoints.verify(output / "checkpoint-4")

    edit_config(config, resume_from_checkpoint="latest")
    job = tmp_path / "crash" / "job2"
    result = train_config(config, job)
    assert result.step == 6 and result.losses[0][0] == 3  # from checkpoint-2: steps 3..6 again
    assert dict(result.losses) == {s: uninterrupted[s] for s in range(3, 7)}
    said = [e["message"] for e in events_of(job, "log") if "skipped checkpoint-4" in e["message"]]
    assert said and "trainable.safetensors is 100 bytes" in said[0] and "resuming from checkpoint-2" in said[0]
    # The damaged one is kept beside the new checkpoint-4, for the user to inspect or restore.
    [kept] = output.glob("checkpoint-4.damaged-*")
    assert (kept / "trainable.safetensors").stat().st_size == 100
    assert checkpoints.verify(output / "checkpoint-4") is None


def test_a_changed_file_of_the_same_size_fails_its_hash(tmp_path) -> None:
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    save_file({"w": torch.ones(8)}, str(folder / "trainable.safetensors"))
    (folder / checkpoints.MARKER).write_text(json.dumps({"step": 2, "files": checkpoints.manifest(folder)}))
    assert checkpoints.verify(folder) is None
    data = bytearray((folder / "trainable.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "trainable.safetensors").write_bytes(bytes(data))
    assert "has changed since it was written" in checkpoints.verify(folder)


def test_a_checkpoint_from_before_manifests_is_checked_by_its_headers(tmp_path) -> None:
    folder = tmp_path / "checkpoint-2"
    folder.mkdir()
    save_file({"w": torch.ones(64)}, str(folder / "optimizer.safetensors"))
    (folder / checkpoints.MARKER).write_text(json.dumps({"step": 2, "format": 1}))
    assert checkpoints.verify(folder) is None
    data = (folder / "optimizer.safetensors").read_bytes()
    (folder / "optimizer.safetensors").write_bytes(data[:-10])
    assert "its header says" in checkpoints.verify(folder)


def test_when_every_checkpoint_is_damaged_resume_says_so_and_deletes_nothing(tmp_path, tiny_sana) -> None:
    from tuner.engine.train import checkpoint

    config = demo_config(tmp_path, tiny_sana, max_train_steps=2, checkpoint_step_interval=2)
    train_config(config, tmp_path / "job")
    output = tmp_path / "output"
    cut_short(output / "checkpoint-2" / "optimizer.safetensors")
    with pytest.raises(FileNotFoundError, match="no checkpoint in .* is whole .*checkpoint-2: optimizer.safetensors"):
        checkpoint.resolve_resume(output, "latest")
    assert (output / "checkpoint-2" / "optimizer.safetensors").stat().st_size == 100


def test_tuner_check_names_a_damaged_checkpoint_and_what_resume_will_do(tmp_path, tiny_sana, capsys) -> None:
    from tuner.engine.cli import main

    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, checkpoint_step_interval=2)
    train_config(config, tmp_path / "job")
    cut_short(tmp_path / "output" / "checkpoint-4" / "trainable.safetensors")
    edit_config(config, resume_from_checkpoint="latest")
    assert main(["check", str(config), "--no-data"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint-4 is damaged:" in out and "latest skips it and resumes from checkpoint-2" in out


# --------------------------------------------------------------------------------------------
# A full disk: said before the save starts (or when a write hits ENOSPC), and nothing is lost
# --------------------------------------------------------------------------------------------


def run_engine(config: Path, job: Path) -> int:
    from tuner.engine.runner import run

    return run(config, job)


def test_a_save_that_would_not_fit_stops_the_run_and_keeps_the_earlier_checkpoint(tmp_path, tiny_sana,
                                                                                   monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    from tuner.engine.train import checkpoint

    config = demo_config(tmp_path, tiny_sana, max_train_steps=6, checkpoint_step_interval=2)
    real = shutil.disk_usage
    Usage = namedtuple("Usage", "total used free")
    # The disk fills up after the first checkpoint: 1 KiB free when the second is due.
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: real(p) if not checkpoint.checkpoint_dirs(
        tmp_path / "output") else Usage(10 << 30, (10 << 30) - 1024, 1024))
    job = tmp_path / "job"
    assert run_engine(config, job) == 1
    [error] = events_of(job, "error")
    assert f"not enough disk space in {tmp_path / 'output'} for checkpoint-4" in error["message"]
    assert "GiB needed, 0.00 GiB free" in error["message"] and "resume_from_checkpoint: latest" in error["message"]
    assert [p.name for _, p in checkpoint.checkpoint_dirs(tmp_path / "output")] == ["checkpoint-2"]
    assert checkpoints.verify(tmp_path / "output" / "checkpoint-2") is None
    # Space freed: the run resumes and finishes.
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)
    edit_config(config, resume_from_checkpoint="latest")
    assert run_engine(config, tmp_path / "job2") == 0


def test_a_write_that_hits_a_full_disk_is_cleaned_up_and_said(tmp_path, tiny_sana, monkeypatch) -> None:
    import errno

    from tuner.engine.train import checkpoint

    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, checkpoint_step_interval=2)
    real = checkpoint.save_file

    def full_after_first(tensors, path):
        if "checkpoint-4" in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", full_after_first)
    job = tmp_path / "job"
    assert run_engine(config, job) == 1
    assert "not enough disk space" in events_of(job, "error")[0]["message"]
    assert not (tmp_path / "output" / ".checkpoint-4.tmp").exists()
    assert checkpoints.verify(tmp_path / "output" / "checkpoint-2") is None


def test_a_process_the_checkpoint_had_not_draws_noise_of_its_own(tmp_path) -> None:
    """Resumed on more processes than saved: rank 2 must not repeat rank 0's (or rank 1's) noise."""
    import torch

    from tuner.engine.train import checkpoint as ckpt

    saved = torch.Generator().manual_seed(7)
    for rank in (0, 1):
        ckpt.write_rank(tmp_path, rank, saved)

    def first_draws(rank: int) -> torch.Tensor:
        generator = torch.Generator()
        ckpt.load_rng(tmp_path, rank, generator)
        return torch.randn(4, generator=generator)

    drawn = {rank: first_draws(rank) for rank in (0, 1, 2, 3)}
    assert torch.equal(drawn[0], drawn[1])   # both saved from the same generator state here
    assert not torch.equal(drawn[2], drawn[0]) and not torch.equal(drawn[3], drawn[2])
    assert torch.equal(first_draws(2), drawn[2])   # and the same again on the next resume


def test_a_gpus_own_noise_generator_is_saved_and_resumed(tmp_path) -> None:
    """On a GPU the noise comes from a generator on the device: its state rides in the rank's file too
    (a second CPU generator stands in for it here)."""
    import torch

    from tuner.engine.train import checkpoint as ckpt

    host, noise = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    torch.randn(10, generator=noise)
    ckpt.write_rank(tmp_path, 0, host, noise)
    expected = torch.randn(4, generator=noise)
    host2, noise2 = torch.Generator(), torch.Generator()
    ckpt.load_rng(tmp_path, 0, host2, noise2)
    assert torch.equal(torch.randn(4, generator=noise2), expected)
    assert torch.equal(host2.get_state(), host.get_state())
