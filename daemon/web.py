"""`tunerd web`: the monitor in a browser, for a machine you reach over ssh or a LAN.

A small HTTP server (the standard library's; a page and a few JSON endpoints need no framework)
that is a client of tunerd like the TUI: the job list, and for one job its live view. One
subscription per watched job folds the events here, with the same `JobView` the terminal views
use; the page polls the folded view each second (plain requests pass any proxy or ssh tunnel),
so the browser only draws. Validation images and previews are served from the job's
own folders and nowhere else.

Bound to 127.0.0.1 by default (`ssh -L 8765:localhost:8765 host` reaches it); any other address
needs the access token printed at start, in the URL (`?token=…`).
"""
from __future__ import annotations

import json
import logging
import mimetypes
import secrets
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tuner.daemon import protocol as p
from tuner.daemon.client import Client
from tuner.engine.event_fold import JobView

log = logging.getLogger("tunerd.web")

PAGES = Path(__file__).parent / "webui"
STATIC = {"/": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
RETRY_SECONDS = 1.0    # between attempts to reach a daemon that went away
IDLE_SECONDS = 60.0    # a job no tab has asked about for this long is no longer followed
SERVED_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4"}


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


class Monitor(ThreadingHTTPServer):
    """The HTTP server and what its handlers share: the access token and the followed jobs."""

    daemon_threads = True

    def __init__(self, host: str, port: int, token: str | None):
        super().__init__((host, port), Handler)
        self.token = token
        self.views = Views()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/" + (f"?token={self.token}" if self.token else "")


class Handler(BaseHTTPRequestHandler):
    server: Monitor
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self.server.token and not secrets.compare_digest(query.get("token", ""), self.server.token):
            return self._text(HTTPStatus.FORBIDDEN, "this monitor needs its access token: open the URL "
                              "`tunerd web` printed (…?token=…)")
        parts = [part for part in url.path.split("/") if part]
        try:
            if url.path in STATIC:
                return self._file(PAGES / STATIC[url.path])
            if parts == ["api", "jobs"]:
                return self._json(self._daemon("list"))
            if len(parts) == 3 and parts[:2] == ["api", "jobs"]:
                return self._json(self._daemon("show", job=parts[2]))
            if len(parts) == 4 and parts[:2] == ["api", "jobs"] and parts[3] == "view":
                return self._view(parts[2])
            if len(parts) == 4 and parts[:2] == ["api", "jobs"] and parts[3] == "file":
                return self._job_file(parts[2], query.get("path", ""))
        except p.DaemonNotRunning:
            return self._json({"error": "tunerd is not running; start it with `tunerd start`"},
                              HTTPStatus.SERVICE_UNAVAILABLE)
        except p.ProtocolError as exc:
            status = HTTPStatus.NOT_FOUND if exc.code == "not_found" else HTTPStatus.BAD_REQUEST
            return self._json({"error": exc.message}, status)
        return self._text(HTTPStatus.NOT_FOUND, f"nothing at {url.path}")

    # -- answers ----------------------------------------------------------------------------

    def _daemon(self, verb: str, **args: Any) -> dict[str, Any]:
        with Client(timeout=30) as client:
            return client.request(verb, **args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    def _json(self, data: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _file(self, path: Path) -> None:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(HTTPStatus.OK, path.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/") or
                                                             kind.endswith("javascript") else ""))

    def _job_file(self, job_id: str, wanted: str) -> None:
        """An image or video the job wrote: only from its output folder or its job folder."""
        job = self._daemon("show", job=job_id)["job"]
        path = Path(wanted).resolve()
        roots = [Path(r).resolve() for r in (job.get("output_dir"), job.get("dir")) if r]
        if path.suffix.lower() not in SERVED_TYPES or not any(path.is_relative_to(r) for r in roots):
            return self._text(HTTPStatus.FORBIDDEN, "only the job's own images and videos are served")
        if not path.is_file():
            return self._text(HTTPStatus.NOT_FOUND, f"{path} does not exist (yet)")
        self._file(path)

    def _view(self, job_id: str) -> None:
        self._daemon("show", job=job_id)  # an unknown job is a 404 here, not a follower
        self._json(self.server.views.snapshot(job_id))


class Follower:
    """One job's view, kept current by one subscription to tunerd (however many tabs poll it)."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.view = JobView()
        self.lock = threading.Lock()
        self.daemon_down = False
        self.polled = time.monotonic()
        threading.Thread(target=self._follow, name=f"tunerd-web-{job_id}", daemon=True).start()

    def snapshot(self) -> dict[str, Any]:
        self.polled = time.monotonic()
        with self.lock:
            return {**self.view.snapshot(), "daemon_down": self.daemon_down}

    @property
    def idle(self) -> bool:
        return time.monotonic() - self.polled > IDLE_SECONDS

    def _follow(self) -> None:
        last = {"engine": 0, "daemon": 0}
        while not self.view.ended and not self.idle:
            try:
                with Client(timeout=IDLE_SECONDS) as client:
                    self.daemon_down = False
                    for message in client.subscribe(self.job_id, last["engine"], last["daemon"]):
                        if "ok" in message:
                            continue
                        if "event" in message:
                            last[message["stream"]] = message["event"]["seq"]
                        with self.lock:
                            self.view.apply_message(message)
                        if self.idle:
                            return  # nobody looks any more; a later poll starts a new follower
            except (p.DaemonNotRunning, ConnectionError, OSError):
                self.daemon_down = True
                time.sleep(RETRY_SECONDS)


class Views:
    """The followed jobs, by id."""

    def __init__(self) -> None:
        self.followers: dict[str, Follower] = {}
        self.lock = threading.Lock()

    def snapshot(self, job_id: str) -> dict[str, Any]:
        with self.lock:
            follower = self.followers.get(job_id)
            if follower is None or (follower.idle and not follower.view.ended):
                follower = self.followers[job_id] = Follower(job_id)
        return follower.snapshot()


def serve(host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> Monitor:
    """A started monitor (serving in a background thread); `token` defaults to one for non-loopback hosts."""
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(16)
    monitor = Monitor(host, port, token)
    threading.Thread(target=monitor.serve_forever, name="tunerd-web", daemon=True).start()
    return monitor


def command(host: str, port: int) -> int:
    """`tunerd web`: serve until Ctrl-C."""
    try:
        monitor = serve(host, port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc}; choose another --port") from None
    print(f"tuner monitor: {monitor.url}")
    if is_loopback(host):
        print(f"from another machine: ssh -L {port}:localhost:{port} THIS_HOST, then open the URL there")
    print("Ctrl-C stops it (the jobs go on)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        monitor.shutdown()
    return 0
