"""The daemon's pure parts: state machine, queue, how a job ended, submit's path rewriting, attach's view."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from tuner.daemon import protocol as p
from tuner.daemon import runner, submit
from tuner.engine.liveview import LiveView
from tuner.daemon.jobs import DAEMON_EVENTS, Job, JobStore, TransitionError
from tuner.daemon.queue import Scheduler
from tuner.engine.events import EventWriter


def make_job(tmp_path: Path, job_id: str = "j1", **fields) -> Job:
    folder = tmp_path / job_id
    folder.mkdir(parents=True, exist_ok=True)
    return Job(id=job_id, dir=str(folder), **fields)


def test_transitions_are_checked_recorded_and_announced(tmp_path):
    store = JobStore(tmp_path)
    job = make_job(tmp_path)
    store.add(job)
    store.transition(job, p.STARTING)
    with pytest.raises(TransitionError, match="cannot go from starting to done"):
        store.transition(job, p.DONE)
    store.transition(job, p.RUNNING, "engine pid 1", pid=1)
    store.transition(job, p.STOPPING)
    store.transition(job, p.STOPPED, "stopped on request")
    with pytest.raises(TransitionError):
        store.transition(job, p.RUNNING)  # an ended job runs again only through the queue
    store.transition(job, p.QUEUED, "resume")
    saved = json.loads((Path(job.dir) / "job.json").read_text())
    assert [h["state"] for h in saved["history"]] == ["queued", "starting", "running", "stopping", "stopped", "queued"]
    events = [json.loads(line) for line in (Path(job.dir) / DAEMON_EVENTS).read_text().splitlines()]
    assert [(e["seq"], e["job_state"]) for e in events] == list(enumerate([h["state"] for h in saved["history"]], 1))
    assert Job.load(Path(job.dir)).state == p.QUEUED


def test_every_state_has_a_way_out_except_through_the_queue():
    assert set(p.TRANSITIONS) == set(p.STATES)
    for final in p.FINAL_STATES:
        assert p.TRANSITIONS[final] == (p.QUEUED,)


def test_a_damaged_record_does_not_stop_the_others_loading(tmp_path):
    good = make_job(tmp_path, "good")
    good.save()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "job.json").write_text("{not json")
    store = JobStore(tmp_path)
    store.load_all()
    assert list(store.jobs) == ["good"]


def test_jobs_are_found_by_prefix_or_name_and_ambiguity_is_an_error(tmp_path):
    store = JobStore(tmp_path)
    for job_id, name in (("20260101-a", "alpha"), ("20260101-b", "beta")):
        store.add(make_job(tmp_path, job_id, name=name))
    assert store.get("20260101-a").name == "alpha"
    assert store.get("beta").id == "20260101-b"
    with pytest.raises(p.ProtocolError, match="matches 2 jobs"):
        store.get("2026")


def test_queue_is_fifo_and_hands_out_whole_gpus(tmp_path):
    sched = Scheduler(["0", "1", "2"])
    big = make_job(tmp_path, "a", state=p.QUEUED, gpus=2, updated=1)
    small = make_job(tmp_path, "b", state=p.QUEUED, gpus=1, updated=2)
    later = make_job(tmp_path, "c", state=p.QUEUED, gpus=1, updated=3)
    assert [(j.id, d) for j, d in sched.next_starts([later, small, big])] == [("a", ["0", "1"]), ("b", ["2"])]
    running = make_job(tmp_path, "r", state=p.RUNNING, gpus=2, devices=["0", "1"])
    # The big job at the head waits for two GPUs; the small one behind it does not overtake.
    assert sched.next_starts([running, big, small]) == []
    assert sched.check(4) and not sched.check(3)


def test_without_gpus_one_job_runs_at_a_time(tmp_path):
    sched = Scheduler([])
    a = make_job(tmp_path, "a", state=p.QUEUED, updated=1)
    b = make_job(tmp_path, "b", state=p.QUEUED, updated=2)
    assert [(j.id, d) for j, d in sched.next_starts([a, b])] == [("a", [])]
    a.state = p.RUNNING
    assert sched.next_starts([a, b]) == []


@pytest.mark.parametrize("phase, code, cancelled, state", [
    ("done", 0, False, p.DONE),
    ("stopped", 3, False, p.STOPPED),
    ("failed", 1, False, p.FAILED),
    ("training", -9, False, p.INTERRUPTED),
    ("training", None, False, p.INTERRUPTED),
    ("training", 1, False, p.FAILED),
    ("training", 0, False, p.FAILED),
    ("training", -15, True, p.STOPPED),
    ("done", -15, True, p.DONE),
])
def test_how_a_job_ended(tmp_path, phase, code, cancelled, state):
    job = make_job(tmp_path, cancel_requested=cancelled, pid=42)
    EventWriter(Path(job.dir) / "events.jsonl").emit("status", phase=phase)
    assert runner.final_state(job, code)[0] == state


def test_a_previous_runs_phase_does_not_decide_how_this_run_ended(tmp_path):
    job = make_job(tmp_path, pid=42)
    EventWriter(Path(job.dir) / "events.jsonl").emit("status", phase="stopped")
    job.start_seq = job.latest()["seq"]  # a resumed run that died before writing anything
    assert runner.final_state(job, 1)[0] == p.FAILED


def test_submit_makes_relative_paths_absolute_against_the_clients_cwd(tmp_path):
    cwd = tmp_path / "work"
    config_dir = cwd / "config"
    config_dir.mkdir(parents=True)
    (cwd / "model").mkdir()
    (cwd / "images").mkdir()
    (config_dir / "config.json").write_text(json.dumps({
        "--model_family": "sana", "model_type": "full", "--output_dir": "out",
        "pretrained_model_name_or_path": "model", "pretrained_vae_model_name_or_path": "org/hub-model",
        "--data_backend_config": "config/multidatabackend.json", "user_prompt_library": "config/prompts.json"}))
    (config_dir / "multidatabackend.json").write_text(json.dumps([
        {"id": "a", "instance_data_dir": "images", "cache_dir_vae": "cache/vae"},
        {"id": "t", "dataset_type": "text_embeds", "default": True, "cache_dir": "/abs/text"}]))
    (config_dir / "prompts.json").write_text(json.dumps({"cat": "a cat"}))
    staging = tmp_path / "jobs" / ".staging-j1"
    staging.mkdir(parents=True)
    job = submit.stage("j1", staging, submit.read_bundle(config_dir, cwd), str(config_dir), "j1", 0)
    folder = tmp_path / "jobs" / "j1"
    assert job.dir == str(folder) and not staging.exists()
    config = json.loads((folder / "config.json").read_text())
    datasets = json.loads((folder / "multidatabackend.json").read_text())
    assert config["output_dir"] == job.output_dir == str(cwd / "out")
    assert config["pretrained_model_name_or_path"] == str(cwd / "model")
    assert config["pretrained_vae_model_name_or_path"] == "org/hub-model"  # a hub id stays one
    assert config["data_backend_config"] == str(folder / "multidatabackend.json")
    assert config["user_prompt_library"] == str(folder / "user_prompt_library.json")
    assert datasets[0]["instance_data_dir"] == str(cwd / "images")
    assert datasets[0]["cache_dir_vae"] == str(cwd / "cache" / "vae")
    assert datasets[1]["cache_dir"] == "/abs/text"
    assert json.loads((folder / "user_prompt_library.json").read_text()) == {"cat": "a cat"}


def test_submit_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(p.ProtocolError, match="not found"):
        submit.read_bundle(tmp_path / "nowhere", tmp_path)
    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(p.ProtocolError, match="config.json: \\(file\\): expected a JSON object"):
        submit.read_bundle(tmp_path, tmp_path)


def test_attach_view_shows_progress_memory_files_and_log_lines():
    view = LiveView(title="tunerd attach j1")
    feed = [
        ("daemon", {"type": "status", "job_state": "running", "reason": "engine pid 7"}),
        ("engine", {"type": "status", "phase": "training"}),
        ("engine", {"type": "progress", "step": 50, "total": 200, "loss": 0.1234, "lr": 1e-4,
                    "steps_per_s": 2.5, "eta_s": 60}),
        ("engine", {"type": "memory", "devices": [{"name": "cuda:0", "allocated": 2**31, "reserved": 2**32, "peak": 2**32}]}),
        ("daemon", {"type": "memory", "devices": [{"device": "0", "name": "H100", "used": 2**34, "total": 2**36}]}),
        ("engine", {"type": "preview", "path": "/p/frame.png", "k": 2, "n": 4, "nickname": "cat"}),
        ("engine", {"type": "validation", "step": 50, "paths": ["/v/cat.png"]}),
        ("engine", {"type": "log", "level": "warning", "message": "loss is high"}),
    ]
    for stream, event in feed:
        view.feed_message({"stream": stream, "event": event})
    console = Console(width=120, record=True)
    console.print(view)
    text = console.export_text()
    for expected in ("running", "50/200", "0.1234", "1.00e-04", "2.50 it/s", "1:00",
                     "2.0 GiB allocated", "GPU 0 H100", "16.0 GiB used", "/p/frame.png", "/v/cat.png",
                     "loss is high"):
        assert expected in text, expected


def test_a_multi_gpu_job_runs_under_accelerate_launch_on_its_own_port(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNER_ENGINE_CMD", raising=False)
    job = make_job(tmp_path, devices=["2", "3"], gpus=2)
    argv = runner.engine_argv(job)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "2"
    assert argv[-3:] == ["-m", "tuner.engine", job.dir]
    assert int(argv[argv.index("--main_process_port") + 1]) > 0
    single = runner.engine_argv(make_job(tmp_path, "j2", devices=["0"]))
    assert single[1:] == ["-m", "tuner.engine", str(tmp_path / "j2")]


def test_a_cpu_job_of_several_processes_runs_them_under_accelerate_launch(tmp_path, monkeypatch):
    # tunerd submit --num-processes 2 on a machine without GPUs: two gloo processes of one CPU job.
    monkeypatch.delenv("TUNER_ENGINE_CMD", raising=False)
    job = make_job(tmp_path, devices=[], gpus=0)
    job.processes = 2
    argv = runner.engine_argv(job)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--num_processes") + 1] == "2" and argv[-3:] == ["-m", "tuner.engine", job.dir]
