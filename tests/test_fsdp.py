"""Full-rank training sharded with FSDP2 (fsdp_enable): each process holds half the model, trains
what DDP trains, checkpoints its shards, resumes exactly, and exports a folder diffusers loads.
Two real processes joined by gloo run the real training loop on the tiny Sana."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import demo_config, torchrun_script

SCRIPT = """
import json, os, sys
from pathlib import Path

from tuner.engine.config import load_bundle
from tuner.engine.events import EventWriter
from tuner.engine.models import common
from tuner.engine.train import loop, sharding
from tuner.engine.train.control import Control

config_dir, out, stop = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
seen = {}
shard = sharding.shard


def recording_shard(model, cfg, device):  # what this process holds once sharded
    model = shard(model, cfg, device)
    seen["held"], seen["whole"] = sharding.local_sizes(model)
    return model


sharding.shard = recording_shard
read = common.load_component


def counting_load(cls, source, subfolder, method="from_pretrained", **kwargs):  # reads of the trained weights
    seen["weights_read"] += subfolder == "transformer" and method == "from_pretrained"
    return read(cls, source, subfolder, method, **kwargs)


common.load_component = counting_load
seen["weights_read"] = 0
rank = os.environ["RANK"]
result = loop.train(load_bundle(config_dir), events=EventWriter(out / f"events-{rank}.jsonl"),
                    control=Control(out / "control"), preview_dir=out / "previews",
                    stop_after=None if stop == "none" else int(stop))
seen.update(losses=result.losses, step=result.step)
(out / f"seen-{rank}.json").write_text(json.dumps(seen))
"""


def run_sharded(tmp: Path, config: Path, stop: int | None = None, processes: int = 2) -> dict[str, dict]:
    """Train `config` on `processes` gloo processes (two by default); returns what each rank saw, by rank."""
    script = tmp / "fsdp_run.py"
    script.write_text(SCRIPT)
    proc = torchrun_script(str(script), str(config), str(tmp), str(stop or "none"), processes=processes)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return {str(rank): json.loads((tmp / f"seen-{rank}.json").read_text()) for rank in range(processes)}


def sharded_config(tmp: Path, model: Path, **overrides) -> Path:
    settings = dict(images=8, max_train_steps=4, train_batch_size=1, model_type="full", optimizer="adamw",
                    mixed_precision="no", gradient_accumulation_steps=2, use_ema=True, ema_validation="comparison",
                    fsdp_enable=True, validation_disable=False, validation_num_inference_steps=2,
                    checkpoint_step_interval=2)
    return demo_config(tmp, model, **{**settings, **overrides})


def weights(output: Path, export: str = "pipeline") -> dict[str, torch.Tensor]:
    return load_file(next((output / export / "transformer").glob("*.safetensors")))


@pytest.fixture(scope="module")
def straight(tmp_path_factory, tiny_sana):
    """One sharded run of 4 steps (accumulating 2 micro-batches, EMA, validation at the end)."""
    tmp = tmp_path_factory.mktemp("fsdp-straight")
    return tmp, run_sharded(tmp, sharded_config(tmp, tiny_sana))


@pytest.mark.slow
def test_each_process_holds_half_the_model_and_trains_what_ddp_trains(straight, tmp_path, tiny_sana):
    from diffusers import SanaTransformer2DModel

    from tuner.engine import checkpoints

    tmp, seen = straight
    for rank in ("0", "1"):
        assert seen[rank]["step"] == 4
        assert abs(seen[rank]["held"] - seen[rank]["whole"] / 2) < 0.05 * seen[rank]["whole"], seen[rank]
    logged = [e["message"] for e in map(json.loads, (tmp / "events-0.jsonl").read_text().splitlines())
              if e["type"] == "log"]
    assert any("FSDP2 over 2 processes" in m for m in logged), logged

    # The same run under DDP (every process a whole copy): the same losses, the same weights.
    ddp = run_sharded(tmp_path, sharded_config(tmp_path, tiny_sana, fsdp_enable=False))
    for (step, loss), (ddp_step, ddp_loss) in zip(seen["0"]["losses"], ddp["0"]["losses"], strict=True):
        assert step == ddp_step and loss == pytest.approx(ddp_loss, rel=1e-5)
    sharded_out, ddp_out = tmp / "output", tmp_path / "output"
    for export in ("pipeline", "pipeline-ema"):
        ours, theirs = weights(sharded_out, export), weights(ddp_out, export)
        assert ours.keys() == theirs.keys()
        assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-3

    # The checkpoint holds each process's shards, in the manifest the resume check verifies.
    checkpoint = sharded_out / "checkpoint-4"
    assert checkpoints.verify(checkpoint) is None
    shards = sorted(p.name for p in (checkpoint / "sharded").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    assert not (checkpoint / "trainable.safetensors").exists()
    # The export is a whole model that diffusers loads; validation sampled the trained and EMA weights.
    model = SanaTransformer2DModel.from_pretrained(sharded_out / "pipeline", subfolder="transformer")
    assert sum(p.numel() for p in model.parameters()) == seen["0"]["whole"]
    samples = sorted(p.name for p in (sharded_out / "validation_images" / "step-000004").glob("*.png"))
    assert any("_ema" in name for name in samples) and any("_ema" not in name for name in samples), samples


@pytest.mark.slow
def test_a_sharded_run_stopped_and_resumed_ends_with_the_same_weights(straight, tmp_path, tiny_sana):
    tmp, seen = straight
    config = sharded_config(tmp_path, tiny_sana, resume_from_checkpoint="latest")
    first = run_sharded(tmp_path, config, stop=2)
    assert first["0"]["step"] == 2
    second = run_sharded(tmp_path, config)
    assert second["0"]["losses"] == seen["0"]["losses"][2:]
    for export in ("pipeline", "pipeline-ema"):
        resumed, straight_weights = weights(tmp_path / "output", export), weights(tmp / "output", export)
        assert all(torch.equal(resumed[k], straight_weights[k]) for k in straight_weights)


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_resumes_on_three(straight, tmp_path, tiny_sana):
    """The distributed checkpoint reshards: loaded on 3 processes it is the same model and EMA."""
    import shutil

    tmp, _seen = straight
    config = sharded_config(tmp_path, tiny_sana, resume_from_checkpoint="latest", validation_disable=True)
    shutil.copytree(tmp / "output" / "checkpoint-4", tmp_path / "output" / "checkpoint-4")
    resumed = run_sharded(tmp_path, config, processes=3)   # at step 4 of 4: it loads, then exports
    assert {seen["step"] for seen in resumed.values()} == {4}
    for rank in resumed:   # a third of the model each now
        assert abs(resumed[rank]["held"] - resumed[rank]["whole"] / 3) < 0.05 * resumed[rank]["whole"]
    for export in ("pipeline", "pipeline-ema"):
        ours, saved = weights(tmp_path / "output", export), weights(tmp / "output", export)
        assert ours.keys() == saved.keys() and all(torch.equal(ours[k], saved[k]) for k in saved), export


@pytest.mark.slow
def test_with_ram_efficient_loading_only_the_main_process_reads_the_weights(straight, tmp_path, tiny_sana):
    """fsdp_cpu_ram_efficient_loading: the other process starts empty, receives its shards, and the
    run trains exactly what the ordinary sharded run trains."""
    tmp, seen = straight
    efficient = run_sharded(tmp_path, sharded_config(tmp_path, tiny_sana, fsdp_cpu_ram_efficient_loading=True))
    assert efficient["1"]["weights_read"] == 0 and efficient["0"]["weights_read"] >= 1
    assert efficient["1"]["held"] == seen["1"]["held"]
    assert efficient["0"]["losses"] == seen["0"]["losses"]
    for export in ("pipeline", "pipeline-ema"):
        ours, straight_weights = weights(tmp_path / "output", export), weights(tmp / "output", export)
        assert all(torch.equal(ours[k], straight_weights[k]) for k in straight_weights), export


@pytest.mark.slow
def test_ram_efficient_loading_keeps_the_buffers_sana_video_computes(tmp_path, tiny_sanavideo):
    """Sana Video's rotary tables are buffers built at construction and never saved: the processes
    that start empty keep them, so the run trains as the ordinary sharded one does."""
    from video_fixtures import video_config

    runs = {}
    for efficient in (False, True):
        tmp = tmp_path / str(efficient)
        config = video_config(tmp, tiny_sanavideo, fsdp_enable=True, train_batch_size=1, max_train_steps=3,
                              fsdp_cpu_ram_efficient_loading=efficient)
        runs[efficient] = run_sharded(tmp, config)
    assert runs[True]["1"]["weights_read"] == 0
    assert runs[True]["0"]["losses"] == runs[False]["0"]["losses"]


def test_a_sharded_checkpoint_is_not_resumed_unsharded(tmp_path):
    from tuner.engine.train import checkpoint

    folder = tmp_path / "checkpoint-2"
    (folder / "sharded").mkdir(parents=True)
    with pytest.raises(ValueError, match="sharded by FSDP; resume it with fsdp_enable: true"):
        checkpoint.load(folder, model=None, optimizer=None, scheduler=None, ema=None, generator=None, rank=0)


def test_fsdp_settings_are_checked(tmp_path, tiny_sana):
    from tuner.engine.config import check_bundle

    def problems(**settings) -> list[tuple[str, str, str]]:
        config = demo_config(tmp_path / str(len(list(tmp_path.iterdir()))), tiny_sana, **settings)
        return [(i.level, i.key, i.message) for i in check_bundle(config) if "fsdp" in i.key]

    adapter = problems(fsdp_enable=True, model_type="lora", lora_type="lycoris")
    assert [(level, key) for level, key, _ in adapter] == [("error", "fsdp_enable")]
    assert "DDP" in adapter[0][2]
    alone = problems(fsdp_reshard_after_forward=False)
    assert alone == [("warning", "fsdp_reshard_after_forward", "has no effect without fsdp_enable: true")]
    assert problems(fsdp_enable=True, model_type="full") == []


def test_the_estimate_shards_the_training_state_over_the_gpus():
    from tuner.engine.vram import estimate

    config = {"model_family": "sana", "model_type": "full", "mixed_precision": "bf16", "optimizer": "adamw_bf16",
              "gradient_checkpointing": True, "train_batch_size": 4}
    ddp = estimate(config, {"gpus": 2})
    fsdp = estimate({**config, "fsdp_enable": True}, {"gpus": 2})
    for part in ("weights", "gradients", "optimizer"):
        assert fsdp["parts"][part] == pytest.approx(ddp["parts"][part] / 2, rel=0.01)
    assert "ddp_buckets" not in fsdp["parts"] and fsdp["total_gb"] < ddp["total_gb"]
