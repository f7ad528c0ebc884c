"""Where tunerd keeps its files: data dir (jobs, logs, status file) and runtime dir (socket)."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import platformdirs

APP = "tuner"
# sun_path is 108 bytes on Linux (104 on macOS) including the terminating NUL.
MAX_SOCKET_PATH = 100


def data_dir() -> Path:
    """The data dir: TUNER_DATA_DIR, else the platform's user data dir."""
    env = os.environ.get("TUNER_DATA_DIR")
    return Path(env).expanduser().absolute() if env else Path(platformdirs.user_data_dir(APP))


def jobs_dir() -> Path:
    return data_dir() / "jobs"


def status_file() -> Path:
    """dmypy-style record of the running daemon: pid, socket, version."""
    return data_dir() / "tunerd.json"


def lock_file() -> Path:
    """Held (flock) by the running daemon for its whole life; a second one cannot take it."""
    return data_dir() / "tunerd.lock"


def daemon_log() -> Path:
    return data_dir() / "daemon.log"


def runtime_dir() -> Path:
    """The socket's folder: TUNER_RUNTIME_DIR, else XDG_RUNTIME_DIR/tuner, else /tmp/tuner-UID."""
    env = os.environ.get("TUNER_RUNTIME_DIR")
    if env:
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / APP
    return Path(f"/tmp/tuner-{os.getuid()}")


def socket_path() -> Path:
    """The daemon's socket; one per data dir, so several instances can run side by side."""
    folder = runtime_dir()
    tag = hashlib.sha256(str(data_dir()).encode()).hexdigest()[:10]
    name = "tunerd.sock" if os.environ.get("TUNER_RUNTIME_DIR") else f"tunerd-{tag}.sock"
    path = folder / name
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    # A deep runtime dir (long TMPDIR in tests, long home) would not fit in sun_path.
    short = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return Path(f"/tmp/tunerd-{os.getuid()}-{short}") / "tunerd.sock"


def private_dir(path: Path) -> Path:
    """Create `path` (0700, ours) or check that an existing one is; refuse one others can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RuntimeError(f"{path} must be a directory, not a link or a file; remove it and retry")
    if info.st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to uid {info.st_uid}, not to you; remove it or set TUNER_RUNTIME_DIR")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path
