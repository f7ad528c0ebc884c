"""`tunerd web`: the monitor in a real browser (Debian's headless Chromium), fed by a real tunerd.

The test plays the engine as in test_daemon_subscribe (a `sleep` the daemon adopts, events
written from here), with a validation image on disk; Chromium loads the page, and what it shows
is read back from its DOM and from a screenshot of the page.
"""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request

import psutil
import pytest
from PIL import Image, ImageDraw

from tuner.daemon import lifecycle, paths
from tuner.daemon import protocol as p
from tuner.daemon.jobs import Job
from tuner.daemon.web import serve
from tuner.engine.events import EventWriter

from test_daemon_subscribe import stop_daemon
from test_daemon_support import tunerd_env  # noqa: F401

JOB = "20261202-000000-web"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")


@pytest.fixture
def watched(tunerd_env):
    sleeper = subprocess.Popen(["sleep", "600"], start_new_session=True)
    folder = paths.jobs_dir() / JOB
    output = folder.parent.parent / "outputs" / "web"
    (output / "validation_images" / "step-000005").mkdir(parents=True)
    sample = output / "validation_images" / "step-000005" / "red_circle-64x64.png"
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=(230, 20, 20))
    image.save(sample)
    folder.mkdir(parents=True)
    Job(id=JOB, dir=str(folder), name="web-demo", state=p.RUNNING, pid=sleeper.pid,
        create_time=psutil.Process(sleeper.pid).create_time(), output_dir=str(output)).save()
    writer = EventWriter(folder / "events.jsonl")
    writer.emit("status", phase="training", message="step 0 of 10")
    for step, loss in enumerate([0.9, 0.7, 0.6, 0.5, 0.45], 1):
        writer.emit("progress", step=step, total=10, loss=loss, lr=1e-4, steps_per_s=2.0, eta_s=2.5)
    writer.emit("validation", step=5, nickname="red_circle", prompt="a red circle", paths=[str(sample)])
    lifecycle.start()
    monitor = serve("127.0.0.1", 0)
    yield monitor, writer, sample
    monitor.shutdown()
    sleeper.kill()
    sleeper.wait()
    stop_daemon()


def chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=3000", *args], capture_output=True, text=True, timeout=120)


@needs_chromium
def test_the_browser_shows_the_jobs_progress_loss_and_samples(watched, tmp_path) -> None:
    monitor, _, _ = watched
    dom = chromium("--dump-dom", monitor.url + f"?job={JOB}").stdout
    assert "web-demo" in dom and "running" in dom  # the job list
    assert "step 5/10" in dom and "loss 0.4500" in dom and "ETA 0:00:02" in dom
    assert "red_circle, step 5" in dom and "loss over the last 5 reports: 0.4500 – 0.9000" in dom
    assert "validation at step 5: red_circle" in dom  # the log
    # The sample is really drawn: the screenshot holds the circle's red.
    shot = tmp_path / "page.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,900", monitor.url + f"?job={JOB}")
    pixels = list(Image.open(shot).convert("RGB").tobytes())
    pixels = zip(pixels[0::3], pixels[1::3], pixels[2::3])
    red = sum(1 for r, g, b in pixels if r > 200 and g < 60 and b < 60)
    assert red > 2000, f"only {red} red pixels: the validation image was not shown"


def test_files_outside_the_jobs_folders_are_refused(watched, tmp_path) -> None:
    monitor, _, sample = watched
    base = monitor.url + f"api/jobs/{JOB}/file?path="
    assert urllib.request.urlopen(base + str(sample)).read()[:4] == b"\x89PNG"
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG not yours")
    for path in (str(secret), str(sample.parent / ".." / ".." / ".." / ".." / "secret.png")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path)
        assert refused.value.code == 403


def test_a_monitor_on_a_network_address_needs_its_token(tunerd_env) -> None:
    monitor = serve("0.0.0.0", 0)
    try:
        port = monitor.server_address[1]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/jobs")
        assert refused.value.code == 403 and b"access token" in refused.value.read()
        assert monitor.token and f"?token={monitor.token}" in monitor.url
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/?token={monitor.token}").read()
        assert b"tuner monitor" in page
    finally:
        monitor.shutdown()
