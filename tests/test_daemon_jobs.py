"""Job lifecycle through a real tunerd with a stand-in engine: submit, watch, stop, cancel,
resume, crashes of the engine and of the daemon, the queue, rm."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil

from tuner.daemon import paths
from tuner.daemon.client import Client

from test_daemon_support import (  # noqa: F401
    daemon, demo_config, demo_template, request, tunerd, tunerd_env, wait_for, wait_state,
)


def submit(config_dir: Path, **args) -> str:
    return request("submit", path=str(config_dir), cwd=str(config_dir.parent), **args)["job"]["id"]


def engine_events(job_id: str) -> list[dict]:
    path = paths.jobs_dir() / job_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def progress_steps(job_id: str) -> list[int]:
    return [e["step"] for e in engine_events(job_id) if e["type"] == "progress"]


def test_submit_then_list_show_logs_and_the_stream(daemon, demo_template, tunerd_env):
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=10)
    result = tunerd("submit", "config", "--name", "sana demo", cwd=config.parent)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split("queued ")[1].split()[0]
    assert job_id.endswith("-sana-demo")
    folder = paths.jobs_dir() / job_id
    for name in ("config.json", "multidatabackend.json", "user_prompt_library.json", "job.json"):
        assert (folder / name).is_file()
    copied = json.loads((folder / "config.json").read_text())
    assert copied["data_backend_config"] == str(folder / "multidatabackend.json")
    assert Path(copied["output_dir"]).is_absolute()
    wait_state(job_id, "done")
    listing = json.loads(tunerd("list", "--json").stdout)
    assert [(j["id"], j["state"], j["step"]) for j in listing["jobs"]] == [(job_id, "done", 10)]
    shown = tunerd("show", job_id[:12])  # a unique prefix is enough
    assert "state: done" in shown.stdout and "engine.log" in shown.stdout
    assert "step 10" in tunerd("logs", job_id, "-n", "3").stdout
    followed = tunerd("logs", job_id, "-f")  # returns once the job has ended
    assert followed.returncode == 0 and "fake engine: loading" in followed.stdout
    with Client() as client:
        messages = [m for m in client.subscribe(job_id) if "ok" not in m]
    seqs = [m["event"]["seq"] for m in messages if m.get("stream") == "engine"]
    assert seqs == list(range(1, len(engine_events(job_id)) + 1))
    states = [m["event"]["job_state"] for m in messages if m.get("stream") == "daemon"]
    assert states == ["queued", "starting", "running", "done"]
    assert messages[-1]["end"] is True
    attached = tunerd("attach", job_id)  # an ended job: the view shows its history and returns
    assert attached.returncode == 0 and f"{job_id}: done" in attached.stdout


def test_stop_with_jobs_checkpoints_them_and_the_next_start_records_how_they_ended(daemon, demo_template, tunerd_env):
    job_id = submit(demo_config(demo_template, tunerd_env["tmp"], max_train_steps=1000))
    wait_for(lambda: progress_steps(job_id), what="training to start")
    result = tunerd("stop", "--jobs")
    assert result.returncode == 0 and "asked 1 job(s) to checkpoint and stop" in result.stdout
    # The engine finishes stopping on its own, with no daemon watching.
    wait_for(lambda: any(e.get("phase") == "stopped" for e in engine_events(job_id)), what="the engine to stop")
    assert tunerd("start").returncode == 0
    job = request("show", job=job_id)["job"]
    assert job["state"] == "stopped" and (Path(job["output_dir"]) / f"checkpoint-{progress_steps(job_id)[-1]}").is_dir()
    streamed = tunerd("attach", job_id, "--json").stdout.splitlines()
    assert json.loads(streamed[0])["ok"] and json.loads(streamed[-1])["end"]


def test_quick_start_from_a_preset_and_a_dataset_folder(daemon, demo_template, tunerd_env):
    result = tunerd("submit", "--preset", "sana-tiny-demo", "--dataset", "dataset", "--output", "out",
                    cwd=demo_config(demo_template, tunerd_env["tmp"]).parent)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.split("queued ")[1].split()[0]
    assert job_id.endswith("-sana-tiny-demo-dataset")
    assert ".staging" not in result.stdout  # warnings name the job's own files
    datasets = json.loads((paths.jobs_dir() / job_id / "multidatabackend.json").read_text())
    assert datasets[0]["instance_data_dir"] == str(tunerd_env["tmp"] / "demo" / "dataset")
    assert datasets[0]["resolution"] == 64  # the preset's dataset keys were applied
    request("cancel", job=job_id)
    refused = tunerd("submit", "--preset", "no-such-preset", "--dataset", ".", "--output", "out")
    assert refused.returncode == 1 and "no-such-preset" in refused.stderr


def test_an_invalid_config_is_refused_with_every_error(daemon, demo_template, tunerd_env):
    config = demo_config(demo_template, tunerd_env["tmp"], learning_rat=1e-4, train_batch_size="many")
    result = tunerd("submit", str(config))
    assert result.returncode == 1
    assert "learning_rat" in result.stderr and "train_batch_size" in result.stderr
    assert "nothing was queued" in result.stderr
    assert request("list")["jobs"] == []
    assert not [p for p in paths.jobs_dir().iterdir()]


def test_cancel_ends_the_engine_now(daemon, demo_template, tunerd_env):
    job_id = submit(demo_config(demo_template, tunerd_env["tmp"], max_train_steps=1000))
    wait_for(lambda: len(progress_steps(job_id)) >= 3, what="training to start")
    pid = request("show", job=job_id)["job"]["pid"]
    result = tunerd("cancel", job_id)
    assert result.returncode == 0 and "SIGTERM" in result.stdout
    job = wait_state(job_id, "stopped", timeout=20)
    assert job["reason"] == "cancelled"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert len(progress_steps(job_id)) < 1000


def test_stop_job_checkpoints_and_resume_continues_from_it(daemon, demo_template, tunerd_env):
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=60)
    job_id = submit(config)
    wait_for(lambda: len(progress_steps(job_id)) >= 5, what="training to start")
    assert tunerd("stop-job", job_id).returncode == 0
    assert request("show", job=job_id)["job"]["state"] in ("stopping", "stopped")
    job = wait_state(job_id, "stopped")
    stopped_at = progress_steps(job_id)[-1]
    output = Path(job["output_dir"])
    assert (output / f"checkpoint-{stopped_at}").is_dir()
    assert tunerd("resume", job_id).returncode == 0
    wait_state(job_id, "done")
    steps = progress_steps(job_id)
    # The second run picks up right after the checkpoint: every step once, none lost.
    assert steps == list(range(1, 61))
    assert json.loads((paths.jobs_dir() / job_id / "config.json").read_text())["resume_from_checkpoint"] == "latest"
    assert request("show", job=job_id)["job"]["runs"] == 2


def test_a_killed_engine_is_interrupted_and_resumes_from_its_latest_checkpoint(daemon, demo_template, tunerd_env):
    job_id = submit(demo_config(demo_template, tunerd_env["tmp"], max_train_steps=40, checkpoint_step_interval=10))
    wait_for(lambda: len(progress_steps(job_id)) >= 15, what="a checkpoint")
    pid = request("show", job=job_id)["job"]["pid"]
    os.killpg(pid, signal.SIGKILL)
    job = wait_state(job_id, "interrupted", timeout=10)
    assert "SIGKILL" in job["reason"] and f"tunerd resume {job_id}" in job["reason"]
    killed_at = progress_steps(job_id)[-1]
    request("resume", job=job_id)
    wait_state(job_id, "done")
    steps = progress_steps(job_id)
    assert steps[:killed_at] == list(range(1, killed_at + 1))
    resumed = steps[killed_at:]
    assert resumed[0] == (killed_at // 10) * 10 + 1 and resumed[-1] == 40


def test_the_job_survives_the_daemon_and_is_readopted(daemon, demo_template, tunerd_env):
    job_id = submit(demo_config(demo_template, tunerd_env["tmp"], max_train_steps=80))
    wait_for(lambda: len(progress_steps(job_id)) >= 3, what="training to start")
    engine = request("show", job=job_id)["job"]["pid"]
    os.kill(daemon["pid"], signal.SIGKILL)
    wait_for(lambda: len(progress_steps(job_id)) >= 8, what="the engine to go on without the daemon")
    assert psutil.pid_exists(engine)
    result = tunerd("start")
    assert result.returncode == 0 and "tunerd started" in result.stdout, result.stdout + result.stderr
    assert request("show", job=job_id)["job"]["state"] == "running"
    with Client() as client:
        messages = [m for m in client.subscribe(job_id) if "ok" not in m]
    seqs = [m["event"]["seq"] for m in messages if m.get("stream") == "engine"]
    assert seqs == list(range(1, len(engine_events(job_id)) + 1))
    assert messages[-1]["job"]["state"] == "done"
    assert progress_steps(job_id) == list(range(1, 81))


def test_cpu_jobs_run_one_at_a_time_and_rm_waits_for_the_end(daemon, demo_template, tunerd_env):
    first = submit(demo_config(demo_template, tunerd_env["tmp"] / "a", max_train_steps=30))
    second = submit(demo_config(demo_template, tunerd_env["tmp"] / "b", max_train_steps=5))
    wait_for(lambda: progress_steps(first), what="the first job to run")
    assert request("show", job=second)["job"]["state"] == "queued"
    refused = tunerd("rm", first)
    assert refused.returncode == 1 and "cancel or stop it first" in refused.stderr
    wait_state(second, "done")
    assert request("show", job=first)["job"]["state"] == "done"
    output = Path(request("show", job=first)["job"]["output_dir"])
    assert tunerd("rm", first).returncode == 0
    assert not (paths.jobs_dir() / first).exists() and output.is_dir()
    assert tunerd("rm", second, "--outputs").returncode == 0
    assert [j["id"] for j in request("list")["jobs"]] == []


def test_save_and_sample_reach_the_running_engine(daemon, demo_template, tunerd_env):
    job_id = submit(demo_config(demo_template, tunerd_env["tmp"], max_train_steps=200))
    wait_for(lambda: progress_steps(job_id), what="training to start")
    assert tunerd("save", job_id).returncode == 0
    assert tunerd("sample", job_id).returncode == 0
    wait_for(lambda: {e["type"] for e in engine_events(job_id)} >= {"checkpoint", "validation"},
             what="a checkpoint and a validation")
    assert not (paths.jobs_dir() / job_id / "control" / "save").exists()
    request("cancel", job=job_id)
    wait_state(job_id, "stopped")
    refused = tunerd("save", job_id)
    assert refused.returncode == 1 and "needs a running job" in refused.stderr


def test_two_jobs_never_share_a_name(daemon, demo_template, tunerd_env):
    # A name stands in for an id (`tunerd attach sana-demo`), so a second one gets a suffix.
    config = demo_config(demo_template, tunerd_env["tmp"], max_train_steps=1)
    first = request("submit", path=str(config), cwd=str(config.parent), name="sana demo")["job"]
    second = request("submit", path=str(config), cwd=str(config.parent), name="sana demo")["job"]
    assert (first["name"], second["name"]) == ("sana demo", "sana demo-2")
    assert request("show", job="sana demo-2")["job"]["id"] == second["id"]
