"""report_to: a tiny run's metrics and samples read back from TensorBoard's and wandb's own files,
and a tracker that cannot start costs one warning, not the run."""
from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path

import pytest

from engine_fixtures import demo_config, edit_config, events_of, train_config
from tuner.engine.config.models import TrainConfig
from tuner.engine.events import EventWriter
from tuner.engine.train import trackers

STEPS = 4


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_sana):
    """One 4-step run reporting to TensorBoard and wandb (offline), validating at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("tracked")
    before = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        config = demo_config(tmp, tiny_sana, max_train_steps=STEPS, validation_disable=False,
                             validation_step_interval=2, validation_num_inference_steps=2,
                             report_to="tensorboard,wandb", tracker_run_name="shapes-run",
                             grad_clip_method="norm", max_grad_norm=1.0)
        result = train_config(config, tmp / "job")
    finally:
        if before is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = before
    return tmp / "output", tmp / "job", result


def test_tensorboard_holds_loss_each_step_and_the_validation_images(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output, job, result = tracked_run
    folder = output / "tensorboard" / "shapes-run"
    reader = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    reader.Reload()
    losses = [(s.step, s.value) for s in reader.Scalars("train/loss")]
    assert [step for step, _ in losses] == list(range(1, STEPS + 1))
    assert [v for _, v in losses] == pytest.approx([v for _, v in result.losses], rel=1e-6)
    assert [s.step for s in reader.Scalars("train/lr")] == list(range(1, STEPS + 1))
    assert len(reader.Scalars("train/grad_norm")) == STEPS
    assert {"speed/steps_per_s", "memory/rss_gib"} <= set(reader.Tags()["scalars"])
    # One image series per prompt nickname, at each validation.
    images = reader.Images("validation/validation")
    assert [(i.step, i.width, i.height) for i in images] == [(2, 64, 64), (4, 64, 64)]
    assert len(reader.Tags()["images"]) == 3   # the main prompt and the demo's two library prompts
    assert "_hparams_/experiment" in reader.PluginTagToContent("hparams")
    done = events_of(job, "done")[-1]
    assert done["paths"]["tensorboard"] == str(folder)
    assert any("tensorboard --logdir" in e["message"] for e in events_of(job, "log"))


def wandb_records(path: Path):
    """The records of a .wandb file: LevelDB-log framing (7-byte header, 32 KiB blocks) of protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        payload, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        chunk = payload if kind in (1, 2) else chunk + payload
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            yield record


def test_wandb_offline_run_holds_the_same_series_and_the_config(tracked_run):
    output, job, result = tracked_run
    runs = list((output / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history: dict[int, dict[str, str]] = {}
    config = {}
    for record in wandb_records(next(runs[0].glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            history.setdefault(int(items["_step"]), {}).update(items)
        elif kind == "run":
            config.update({item.key: item.value_json for item in record.run.config.update})
    assert sorted(history) == list(range(1, STEPS + 1))
    assert [float(history[s]["train/loss"]) for s in sorted(history)] == pytest.approx([v for _, v in result.losses])
    assert all("train/lr" in history[s] for s in history)
    for step in (2, 4):
        image = history[step]["validation/validation/path"]
        assert (runs[0] / "files" / json.loads(image)).is_file()
    assert json.loads(config["learning_rate"]) == 2e-3
    assert json.loads(config["report_to"]) == "tensorboard,wandb"
    assert json.loads(config["datasets"])[0]["id"] == "shapes"


def test_a_tracker_that_cannot_start_is_one_warning_and_the_run_goes_on(tmp_path, tiny_sana, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)   # `import wandb` raises ImportError
    config = demo_config(tmp_path, tiny_sana, max_train_steps=2, report_to="wandb")
    result = train_config(config, tmp_path / "job")
    assert result.step == 2 and (result.pipeline / "model_index.json").is_file()
    warnings = [e["message"] for e in events_of(tmp_path / "job", "log") if e["level"] == "warning"]
    assert [w for w in warnings if "wandb" in w or "report_to" in w] == [
        "report_to wandb: the wandb package is not installed (pip install wandb); training goes on without it, "
        "every metric is still in the job's events"]
    assert not (tmp_path / "output" / "wandb").exists()


class Exploding:
    def scalars(self, step, values):
        raise OSError("disk full")

    def image(self, step, tag, path, caption):
        raise AssertionError("not reached")

    def video(self, step, tag, path, still, caption):
        raise AssertionError("not reached")

    def close(self):
        raise AssertionError("a failed tracker is not called again")


def test_a_tracker_failing_mid_run_is_one_warning_then_left_alone(tmp_path):
    import torch

    from tuner.engine.train.meters import Meters

    events = EventWriter(tmp_path / "events.jsonl")
    meters = Meters(10, start_step=0, batch_size=1)
    sink = trackers.Guarded("tensorboard", trackers.TrackerSink("tensorboard", Exploding(), meters,
                                                                torch.device("cpu")), events)
    for step in (1, 2, 3):
        meters.step_done(step, 1.0)
        sink.log(step, {"loss": 1.0, "lr": 1e-4, "grad_norm": None, "epoch": 1})
    sink.close()
    warnings = [e for e in events_of_file(tmp_path / "events.jsonl") if e.get("level") == "warning"]
    assert len(warnings) == 1 and "OSError: disk full" in warnings[0]["message"]


def events_of_file(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("given,stored,names", [
    ("none", "none", []), ("tensorboard", "tensorboard", ["tensorboard"]),
    ("wandb, TensorBoard", "wandb,tensorboard", ["tensorboard", "wandb"]), ("all", "all", ["tensorboard", "wandb"]),
    (["wandb"], "wandb", ["wandb"]), ("", "none", []),
])
def test_report_to_takes_simpletuners_spellings(given, stored, names):
    cfg = TrainConfig(report_to=given)
    assert cfg.report_to == stored
    assert trackers.tracker_names(cfg.report_to) == names


@pytest.mark.parametrize("given,says", [("comet_ml", "'comet_ml' is not a tracker tuner reports to"),
                                        ("none,wandb", "none cannot be combined")])
def test_report_to_refuses_what_tuner_cannot_report_to(given, says):
    with pytest.raises(ValueError, match=says):
        TrainConfig(report_to=given)


def test_sana_video_samples_reach_both_trackers_and_the_card(tmp_path, tiny_sanavideo, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tuner.engine import model_card
    from video_fixtures import video_config

    monkeypatch.setenv("WANDB_MODE", "offline")
    config = video_config(tmp_path, tiny_sanavideo, max_train_steps=2, validation_disable=False,
                          validation_step_interval=2, validation_num_video_frames=5,
                          validation_num_inference_steps=2, report_to="all")
    result = train_config(config, tmp_path / "job")
    output = tmp_path / "output"
    reader = EventAccumulator(str(next((output / "tensorboard").iterdir())), size_guidance={"images": 0})
    reader.Reload()
    strip = reader.Images("validation/validation")   # TensorBoard gets the clip's still strip
    assert [i.step for i in strip] == [2] and strip[0].width > strip[0].height
    run = next((output / "wandb").glob("offline-run-*"))
    videos = {}
    for record in wandb_records(next(run.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            videos.update({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
    assert json.loads(videos["validation/validation/_type"]) == "video-file"
    assert (run / "files" / json.loads(videos["validation/validation/path"])).is_file()
    meta = model_card.front_matter(result.pipeline / "README.md")
    assert meta["pipeline_tag"] == "text-to-video"
    assert [w["output"]["url"] for w in meta["widget"]] == ["images/validation-64x64.mp4"]
    assert (result.pipeline / "images" / "validation-64x64.mp4").is_file()
    assert (result.pipeline / "images" / "validation-64x64-strip.png").is_file()


def test_a_resumed_run_logs_on_into_the_same_wandb_run(tmp_path, tiny_sana, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = demo_config(tmp_path, tiny_sana, max_train_steps=4, report_to="wandb", checkpoint_step_interval=2)
    train_config(config, tmp_path / "job", stop_after=2)
    edit_config(config, resume_from_checkpoint="latest")
    train_config(config, tmp_path / "job")
    output = tmp_path / "output"
    first, second = sorted((output / "wandb").glob("offline-run-*"))
    run_id = (output / trackers.WANDB_RUN_ID).read_text().strip()
    # Each offline folder holds run-<id>.wandb (the folder's own name may carry a -1 when both began in one second).
    assert [next(f.glob("run-*.wandb")).stem for f in (first, second)] == [f"run-{run_id}"] * 2
    steps = {}
    for folder in (first, second):
        steps[folder] = sorted({int(item.value_json) for record in wandb_records(next(folder.glob("run-*.wandb")))
                                if record.WhichOneof("record_type") == "history"
                                for item in record.history.item if (item.key or "/".join(item.nested_key)) == "_step"})
    assert (steps[first], steps[second]) == ([1, 2], [3, 4])
    logs = [e["message"] for e in events_of(tmp_path / "job", "log")]
    assert any(m.startswith("wandb run ") and "(continued)" in m for m in logs)
    # A fresh run in a new output folder starts a wandb run of its own.
    fresh = demo_config(tmp_path / "b", tiny_sana, max_train_steps=1, report_to="wandb")
    train_config(fresh, tmp_path / "b" / "job")
    assert (tmp_path / "b" / "output" / trackers.WANDB_RUN_ID).read_text().strip() != run_id
