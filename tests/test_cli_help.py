"""The command lines' help reads as sentences and agrees with what the commands do."""
from __future__ import annotations

import subprocess
import sys

from test_daemon_support import daemon, tunerd, tunerd_env  # noqa: F401


def help_of(module: str, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", module, *args, "--help"], capture_output=True, text=True,
                          timeout=60, check=True).stdout


def test_tuner_help_says_what_it_is_in_whole_sentences():
    text = help_of("tuner.engine.cli")
    description = " ".join(text.split("\n\n")[1].split())
    assert description.startswith("Fine-tune diffusion models") and description.endswith(".")


def test_tunerd_stop_help_and_output_agree_with_jobs(daemon):  # noqa: F811
    text = " ".join(help_of("tuner.daemon.cli").split())
    assert "stop the daemon (running jobs keep training; --jobs stops them too)" in text
    out = tunerd("stop", "--jobs")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "tunerd stopped; no job was running"
