"""Starting and stopping the daemon process itself, and finding a running one."""
from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tuner.daemon import paths
from tuner.daemon import protocol as p
from tuner.daemon.client import Client


def read_status() -> dict[str, Any] | None:
    """The status file's content, or None when there is none or it cannot be read."""
    try:
        return json.loads(paths.status_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def running() -> dict[str, Any] | None:
    """The running daemon's status reply, or None when no daemon answers."""
    try:
        with Client(timeout=5) as client:
            return client.request("status")
    except (p.DaemonNotRunning, ConnectionError, TimeoutError, OSError):
        return None


def lock_is_free() -> bool:
    """True when no daemon holds this data dir's lock (so its socket and status file are stale)."""
    try:
        fd = os.open(paths.lock_file(), os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def clean_stale() -> list[str]:
    """Remove the socket and status file a crashed daemon left; returns what was removed."""
    removed = []
    paths.data_dir().mkdir(parents=True, exist_ok=True)
    if not lock_is_free():
        return removed
    candidates = {paths.status_file(), paths.socket_path()}
    recorded = (read_status() or {}).get("socket")
    if isinstance(recorded, str):
        candidates.add(Path(recorded))
    for path in candidates:
        if path.exists() or path.is_symlink():
            path.unlink()
            removed.append(str(path))
    return removed


def _spawn_detached(argv: list[str], log: Path) -> int:
    """Run `argv` as a daemon (double fork: own session, not our child, output to `log`); its pid."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(write_end)
                out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.chdir(paths.data_dir())
                os.execv(argv[0], argv)
            os.write(write_end, str(grandchild).encode())
        finally:
            os._exit(127)  # the intermediate always ends here; the grandchild only if exec failed
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        pid = f.read()
    os.waitpid(child, 0)
    if not pid:
        raise RuntimeError("could not fork the daemon")
    return int(pid)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start(timeout: float = 20.0) -> tuple[bool, dict[str, Any]]:
    """Start tunerd in the background (its own session, output to daemon.log) unless one runs.

    Returns (already_running, status reply)."""
    info = running()
    if info is not None:
        return True, info
    clean_stale()
    log = paths.daemon_log()
    pid = _spawn_detached([sys.executable, "-m", "tuner.daemon.server"], log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = running()
        if info is not None:
            # Another `tunerd start` may have won the race for the lock: that one is the daemon.
            return info["pid"] != pid, info
        if _gone(pid):
            info = running()
            if info is not None:
                return True, info
            raise RuntimeError(f"tunerd exited at start; the end of {log}:\n{_tail(log)}")
        time.sleep(0.05)
    raise RuntimeError(f"tunerd did not answer within {timeout:.0f}s; see {log}")


def stop(jobs: bool = False, timeout: float = 20.0) -> dict[str, Any]:
    """Ask tunerd to exit (and, with `jobs`, every running job to checkpoint and stop)."""
    with Client(timeout=10) as client:
        pid = client.hello["pid"]
        reply = client.request("shutdown", jobs=jobs)
    # Not psutil's wait(): where pid 1 is slow to reap orphans, a dead daemon lingers as a zombie.
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"tunerd (pid {pid}) did not exit within {timeout:.0f}s")
        time.sleep(0.02)
    return reply


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(cannot read it: {e})"
