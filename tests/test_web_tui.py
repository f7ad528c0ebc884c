"""`tuner-tui --web`: the same app in a real browser (Debian's headless Chromium), through textual-serve.

The server is the real command in a subprocess. Chromium is driven over its DevTools protocol,
since the page only draws once its websocket has talked to the app (a one-shot `--screenshot`
catches the loading dialog); what the browser received is read from the page, where a script
records the websocket's frames, and the screenshot is kept for the README.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from test_daemon_support import daemon, tunerd_env  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run does)")
ANSI = re.compile(r"\x1b(\[[0-9;?$]*[A-Za-z~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Z]|[=>])")
# Before the page's own script: keep every websocket frame the app sends, as text.
RECORD_FRAMES = """
window.__frames = [];
const decoder = new TextDecoder();
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      if (typeof e.data === "string") window.__frames.push(e.data);
      else if (e.data instanceof ArrayBuffer) window.__frames.push(decoder.decode(e.data));
      else e.data.arrayBuffer().then((b) => window.__frames.push(decoder.decode(b)));
    });
  }
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web_tui(daemon, tunerd_env):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tuner.tui.app", "--web", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = server.stdout.readline()
    url = first.split(": ", 1)[1].strip()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    yield url, first + server.stdout.readline()
    server.terminate()
    server.wait(timeout=20)


def test_the_address_needs_the_printed_token(web_tui) -> None:
    url, printed = web_tui
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[\w-]{20,}", url)
    assert "ssh -L" in printed  # how to reach it from a laptop
    base = url.split("?")[0]
    for wrong in (base, base + "?token=guess", base + "ws"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong)
        assert refused.value.code == 403 and b"token" in refused.value.read()
    page = urllib.request.urlopen(url).read().decode()
    assert f'data-session-websocket-url="ws://{base.split("//")[1]}ws"' in page


def test_a_network_address_is_served_only_when_asked_and_warns() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tuner.tui.app", "--web", "--host", "0.0.0.0", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "token=" in server.stdout.readline()
        assert "warning: listening on 0.0.0.0" in server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=20)


class DevTools:
    """Just enough of Chromium's DevTools protocol: call a method, get its result."""

    def __init__(self, ws):
        self.ws, self.last = ws, 0

    async def __call__(self, method: str, **params):
        self.last += 1
        await self.ws.send_json({"id": self.last, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == self.last:
                return reply.get("result", {})
        raise RuntimeError(f"Chromium closed the DevTools connection during {method}")


async def in_chromium(url: str, shot: Path) -> tuple[str, str]:
    """What the page received from the app before and after the user presses `n`; a screenshot of the first."""
    import aiohttp

    profile = tempfile.mkdtemp(prefix="chromium-")
    browser = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                "--window-size=1100,640", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            targets = await (await session.get(f"http://127.0.0.1:{port}/json")).json()
            page = next(t for t in targets if t["type"] == "page")
            async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                call = DevTools(ws)
                await call("Page.enable")
                await call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_FRAMES)
                await call("Page.navigate", url=url)

                async def screen_text(expect: str) -> str:
                    text = ""
                    for _ in range(300):
                        got = await call("Runtime.evaluate", expression="(window.__frames || []).join('')")
                        text = ANSI.sub("", got["result"].get("value", ""))
                        if expect in text:
                            break
                        await asyncio.sleep(0.1)
                    return text

                home = await screen_text("tuner — jobs")
                await asyncio.sleep(0.5)  # the canvas draws what arrived
                shot.write_bytes(base64.b64decode((await call("Page.captureScreenshot", format="png"))["data"]))
                await call("Runtime.evaluate", expression="window.__frames = []")
                for kind in ("mousePressed", "mouseReleased"):  # as the user does: click into the page first
                    await call("Input.dispatchMouseEvent", type=kind, x=500, y=300, button="left", clickCount=1)
                for kind in ("keyDown", "keyUp"):
                    await call("Input.dispatchKeyEvent", type=kind, key="n", code="KeyN", text="n" if kind == "keyDown" else "",
                               windowsVirtualKeyCode=78)
                wizard = await screen_text("VRAM per GPU")
        return home, wizard
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


@needs_chromium
def test_the_browser_shows_the_home_screen_and_its_keys_drive_the_app(web_tui, tmp_path) -> None:
    url, _ = web_tui
    shot = tmp_path / "tuner-tui-web.png"
    home, wizard = asyncio.run(in_chromium(url, shot))
    assert "tuner — jobs" in home and "New" in home and "Open config" in home
    assert "VRAM per GPU" in wizard  # `n` typed in the page opened the wizard's first step, the hardware
    # The canvas shows the app, not textual-serve's "loading" or "session ended" dialog.
    image = Image.open(shot).convert("RGB")
    dialog = {(12, 24, 31), (18, 35, 45)}
    share = sum(n for n, colour in image.getcolors(1 << 20) if colour in dialog) / (image.width * image.height)
    assert share < 0.1, f"{share:.0%} of the page is textual-serve's dialog"
