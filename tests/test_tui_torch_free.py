"""The TUI's app and every screen import without torch (the app must start fast)."""
import json
import subprocess
import sys

CODE = """
import json, sys
import tuner.tui.app, tuner.tui.screens.wizard
from tuner.tui.screens.wizard import steps
from tuner.tui.screens.monitor import MonitorScreen
steps()
print(json.dumps([m for m in ("torch", "diffusers", "transformers") if m in sys.modules]))
"""


def test_app_and_screens_do_not_import_torch():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
