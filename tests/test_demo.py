"""The README's main command: `tunerd demo` prepares the demo, starts a daemon, trains, and shows it."""
from __future__ import annotations

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
