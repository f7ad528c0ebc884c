"""The README's main command: `tunerd demo` prepares the demo, starts a daemon, trains, and shows it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tunerd_demo_trains_through_a_fresh_daemon(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNER_DATA_DIR": str(tmp_path / "data"),
           "TUNER_RUNTIME_DIR": str(tmp_path / "run")}
    tunerd = str(Path(sys.executable).with_name("tunerd"))
    try:
        proc = subprocess.run([tunerd, "demo", "--dir", str(tmp_path / "demo"), "--steps", "8"], env=env,
                              capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "started tunerd" in proc.stdout
        runs = list((tmp_path / "demo" / "runs").iterdir())
        assert len(runs) == 1
        assert (runs[0] / "pipeline" / "model_index.json").is_file()
        assert list((runs[0] / "validation_images").rglob("*.png"))
        listing = subprocess.run([tunerd, "list"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert "sana-tiny-demo" in listing and "done" in listing
    finally:
        subprocess.run([tunerd, "stop"], env=env, capture_output=True, timeout=60)


# The demo client's path up to the submit, with the daemon stubbed: what it imports, and what it submits.
CLIENT = """
import argparse, json, sys
from pathlib import Path
import tuner.daemon.demo as demo

submitted = []


class FakeClient:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def request(self, verb, **fields):
        submitted.append({"verb": verb, **fields})
        return {"job": {"id": "demo-1"}}


demo.lifecycle.start = lambda: (True, {})
demo.Client = FakeClient
code = demo.run_demo(argparse.Namespace(dir=sys.argv[1], steps=8, no_attach=True))
print(json.dumps({"code": code, "submitted": submitted,
                  "loaded": [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]}))
"""


def test_the_demo_client_prepares_and_submits_without_importing_torch(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNER_DATA_DIR": str(tmp_path / "data"),
           "TUNER_RUNTIME_DIR": str(tmp_path / "run")}
    done = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "demo")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"the tunerd demo client imported {result['loaded']}"
    assert result["code"] == 0
    [submit] = result["submitted"]
    assert submit["verb"] == "submit" and submit["name"] == "sana-tiny-demo" and submit["gpus"] == 0
    # What it submitted is a whole demo: the tiny model was built (in a child process) and the config points at it.
    config = json.loads((Path(submit["path"]) / "config.json").read_text())
    model = Path(config["pretrained_model_name_or_path"])
    assert (model / "model_index.json").is_file() and (model / "transformer").is_dir()
    assert config["max_train_steps"] == 8
