"""tunerd's process: one asyncio loop serving newline-delimited JSON on a private Unix socket."""
from __future__ import annotations

import asyncio
import faulthandler
import fcntl
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

from tuner.daemon import handlers, paths
from tuner.daemon import protocol as p
from tuner.daemon.feed import Hub
from tuner.daemon.gpu import detect_gpus
from tuner.daemon.jobs import JobStore
from tuner.daemon.queue import Scheduler
from tuner.daemon.reconcile import reconcile
from tuner.daemon.supervisor import Supervisor
from tuner.engine.jobdir import write_json_atomic

log = logging.getLogger("tunerd")

# How long a client may leave a full socket buffer unread before it is disconnected.
SLOW_CLIENT_SECONDS = float(os.environ.get("TUNERD_SLOW_CLIENT_SECONDS", "30"))


class AlreadyRunning(Exception):
    """Another daemon holds this data dir's lock."""


class Connection:
    """One client: its handshake state, its streams, and a writer that never interleaves lines."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.greeted = False
        self.closing = False
        self.streams: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    async def send_many(self, messages: list[dict[str, Any]]) -> None:
        async with self._lock:
            for message in messages:
                line = p.encode(message)
                if len(line) > p.MAX_LINE and "event" in message:
                    line = p.encode(_shrunk(message))
                self.writer.write(line)
            try:
                await asyncio.wait_for(self.writer.drain(), SLOW_CLIENT_SECONDS)
            except asyncio.TimeoutError:
                # A client that stopped reading: cut it off instead of holding its backlog (and its
                # stream) for ever; it reconnects from the last seq it saw, as after a restart.
                log.warning("a client read nothing for %.0fs with %d bytes waiting; disconnecting it "
                            "(it may reconnect and resume from its last seq)", SLOW_CLIENT_SECONDS,
                            self.writer.transport.get_write_buffer_size())
                self.writer.transport.abort()
                raise ConnectionError("the client stopped reading") from None

    def start_stream(self, coro: Coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.streams.add(task)
        task.add_done_callback(self._stream_done)

    def _stream_done(self, task: asyncio.Task) -> None:
        self.streams.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, (ConnectionError, BrokenPipeError)):
                log.info("a subscriber went away mid-stream: %s", exc)
            else:
                log.error("a subscription failed", exc_info=exc)


def _shrunk(message: dict[str, Any]) -> dict[str, Any]:
    """An over-long streamed event cut down to its header, so the stream keeps its seq order."""
    event = message.get("event") or {}
    head = {k: event.get(k) for k in ("seq", "time", "type")}
    return {**{k: v for k, v in message.items() if k != "event"}, "event": {**head, "truncated": True}}


class Daemon:
    """Owns the jobs, the queue and the socket for one data dir."""

    def __init__(self) -> None:
        self.data_dir = paths.data_dir()
        self.socket = paths.socket_path()
        self.started = time.time()
        self.store = JobStore(paths.jobs_dir())
        self.scheduler = Scheduler([])
        self.supervisor = Supervisor(self.store, self.scheduler)
        self.stop_event = asyncio.Event()
        self._lock_fd: int | None = None

    def _take_lock(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(paths.lock_file(), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another tunerd already serves {self.data_dir}") from None
        self._lock_fd = fd  # held until the process exits, even by kill -9

    async def serve(self) -> None:
        self._take_lock()
        loop = asyncio.get_running_loop()
        self.hub = Hub(loop)
        self.store.load_all()
        self.scheduler.gpus = detect_gpus()
        self.store.listeners.append(lambda job: self.hub.wake(job.dir))
        adopt = reconcile(self.store)
        paths.private_dir(self.socket.parent)
        # We hold the lock, so a socket file left here belongs to a daemon that died.
        self.socket.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._client, path=str(self.socket), limit=p.MAX_LINE)
        os.chmod(self.socket, 0o600)
        self.hub.start()
        for job in adopt:
            self.supervisor.follow(job)
        background = [loop.create_task(self.supervisor.run()), loop.create_task(self.supervisor.sample_memory())]
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        write_json_atomic(paths.status_file(), {
            "pid": os.getpid(), "socket": str(self.socket), "version": p.DAEMON_VERSION,
            "protocol": p.PROTOCOL_VERSION, "started": self.started, "log": str(paths.daemon_log())})
        log.info("tunerd %s (pid %d) serving %s on %s; GPUs: %s", p.DAEMON_VERSION, os.getpid(),
                 self.data_dir, self.socket, ", ".join(self.scheduler.gpus) or "none (CPU, one job at a time)")
        try:
            await self.stop_event.wait()
        finally:
            log.info("tunerd stopping; running engines keep going and are re-adopted on the next start")
            server.close()
            for task in background:
                task.cancel()
            self.hub.stop()
            self.socket.unlink(missing_ok=True)
            paths.status_file().unlink(missing_ok=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(writer)
        try:
            while not conn.closing:
                try:
                    line = await reader.readline()
                except ValueError:  # asyncio's "Separator is not found, and chunk exceed the limit"
                    await conn.send_many([_error(None, "too_large",
                                                 f"request longer than {p.MAX_LINE} bytes; closing the connection")])
                    break
                if not line:
                    break
                await conn.send_many([await self._dispatch(conn, line)])
        except (ConnectionError, BrokenPipeError) as e:
            log.info("a client went away: %s", e)
        finally:
            for task in list(conn.streams):
                task.cancel()
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, BrokenPipeError) as e:
                log.debug("closing a client's connection: %s", e)

    async def _dispatch(self, conn: Connection, line: bytes) -> dict[str, Any]:
        rid = None
        try:
            msg = p.decode_request(line)
            rid, verb = msg.get("id"), msg["verb"]
            if not conn.greeted and verb != "hello":
                conn.closing = True
                raise p.ProtocolError("handshake", f"send `hello` with version {p.PROTOCOL_VERSION} first")
            handler = handlers.HANDLERS.get(verb)
            if handler is None:
                raise p.ProtocolError("unknown_verb", f"unknown verb {verb!r}; known: {', '.join(p.VERBS)}")
            return {"id": rid, "ok": True, **await handler(self, conn, msg)}
        except p.ProtocolError as e:
            return _error(rid, e.code, e.message, **e.extra)
        except Exception as e:  # a bug in one handler must not take every job's daemon down
            log.exception("request %r failed", line[:200])
            return _error(rid, "internal", f"tunerd failed on this request ({type(e).__name__}: {e}); "
                                           f"details in {paths.daemon_log()}")


def _error(rid: Any, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": message, "code": code, **extra}


def main() -> int:
    """Run the daemon in this process until SIGTERM/SIGINT or a `shutdown` request."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # `kill -USR1 <pid>` writes every thread's stack to daemon.log: for a daemon that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        asyncio.run(Daemon().serve())
    except AlreadyRunning as e:
        print(f"tunerd: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
