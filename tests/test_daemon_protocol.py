"""tunerd's socket: permissions, handshake, and hostile or broken clients that must not hurt it."""
from __future__ import annotations

import json
import os
import signal
import socket
import stat

import psutil
import pytest

from tuner.daemon import lifecycle, paths
from tuner.daemon import protocol as p
from tuner.daemon.client import Client

from test_daemon_support import daemon, request, tunerd, tunerd_env, wait_for  # noqa: F401


def raw(lines: list[bytes], read: int = 1) -> list[dict]:
    """Send raw bytes on a fresh connection; return the first `read` replies."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(paths.socket_path()))
        for line in lines:
            s.sendall(line)
        f = s.makefile("rb")
        return [json.loads(f.readline()) for _ in range(read)]


HELLO = p.encode({"id": 0, "verb": "hello", "version": p.PROTOCOL_VERSION})


def test_socket_is_private_and_status_file_names_it(daemon, tunerd_env):
    sock = paths.socket_path()
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    status = json.loads(paths.status_file().read_text())
    assert status["socket"] == str(sock) and status["pid"] == daemon["pid"]
    assert status["protocol"] == p.PROTOCOL_VERSION


def test_version_mismatch_is_refused_with_a_clear_message(daemon):
    reply = raw([p.encode({"id": 1, "verb": "hello", "version": p.PROTOCOL_VERSION + 1})])[0]
    assert reply["ok"] is False and reply["code"] == "version"
    assert "tunerd stop && tunerd start" in reply["error"]
    # A verb before the handshake is refused too.
    reply = raw([p.encode({"id": 2, "verb": "list"})])[0]
    assert reply["code"] == "handshake" and "hello" in reply["error"]


def test_bad_requests_get_error_replies_and_the_connection_goes_on(daemon):
    replies = raw([HELLO, b"{not json\n", b"[1, 2]\n", b'{"id": 5, "verb": "fly"}\n',
                   b'{"id": 6, "verb": "show"}\n', b'{"id": 7, "verb": "show", "job": 12}\n',
                   b'{"id": 8, "verb": "show", "job": "nope"}\n', b"[" * 200_000 + b"\n",
                   b'{"id": 9, "verb": "ping"}\n'], read=9)
    assert replies[0]["ok"]
    assert [r.get("code") for r in replies[1:8]] == ["bad_request", "bad_request", "unknown_verb",
                                                     "bad_request", "bad_request", "not_found", "bad_request"]
    assert "`job`" in replies[4]["error"]
    assert replies[8] == {**replies[8], "id": 9, "ok": True, "pong": True}


def test_oversized_line_is_refused_and_the_daemon_still_serves(daemon):
    reply = raw([HELLO, b'{"id": 1, "verb": "ping", "pad": "' + b"x" * (p.MAX_LINE + 10) + b'"}\n'], read=2)
    assert reply[1]["code"] == "too_large"
    assert request("ping")["pong"]


def test_vanishing_clients_do_not_take_the_daemon_down(daemon, tunerd_env):
    # Half a request, then gone; a subscriber that goes away mid-stream; garbage bytes.
    for payload in (b'{"id": 1, "verb": "pi', b"\xff\xfe\x00garbage\n", HELLO + b'{"id": 3, "verb": "list"}'):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(paths.socket_path()))
            s.sendall(payload)
    assert request("ping")["pong"]
    assert psutil.pid_exists(daemon["pid"])


def test_verbs_without_a_daemon_say_how_to_start_it(tunerd_env):
    for args in (["list"], ["status"], ["show", "x"], ["stop"]):
        result = tunerd(*args)
        assert result.returncode == 1, args
        assert "tunerd is not running — start it with `tunerd start`" in result.stderr


def test_second_start_finds_the_running_daemon(daemon):
    result = tunerd("start")
    assert result.returncode == 0
    assert f"already running (pid {daemon['pid']}" in result.stdout


def test_a_crashed_daemon_leaves_nothing_that_blocks_the_next_start(daemon, tunerd_env):
    os.kill(daemon["pid"], signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(daemon["pid"]) or
             psutil.Process(daemon["pid"]).status() == psutil.STATUS_ZOMBIE, 10, what="daemon to die")
    assert paths.socket_path().exists()  # stale, refusing connections
    with pytest.raises(p.DaemonNotRunning):
        Client()
    result = tunerd("start")
    assert result.returncode == 0 and "tunerd started" in result.stdout, result.stderr
    assert request("ping")["pong"]


def test_stop_ends_the_daemon_and_removes_its_socket(daemon):
    result = tunerd("stop")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: not paths.socket_path().exists(), 10, what="socket to go")
    assert lifecycle.read_status() is None


def test_long_runtime_dirs_fall_back_to_a_short_socket_path(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TUNER_RUNTIME_DIR", str(tmp_path / ("x" * 120)))
    path = paths.socket_path()
    assert len(os.fsencode(path)) <= paths.MAX_SOCKET_PATH and str(path).startswith("/tmp/")


def test_importing_the_daemon_does_not_load_torch():
    import subprocess
    import sys
    code = ("import sys, tuner.daemon.cli, tuner.daemon.server, tuner.daemon.client, tuner.daemon.attach; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
