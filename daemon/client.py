"""Talking to tunerd: a blocking client for the CLI and an asyncio one for the TUI."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from tuner.daemon import paths
from tuner.daemon import protocol as p

log = logging.getLogger("tunerd.client")

# Replies and streamed events may be longer than a request may; be generous reading them.
READ_LIMIT = 16 * p.MAX_LINE


def daemon_socket() -> Path:
    """The socket named by the status file (dmypy-style) if its daemon is alive, else the default."""
    try:
        info = json.loads(paths.status_file().read_text(encoding="utf-8"))
        pid, sock = int(info["pid"]), Path(info["socket"])
        os.kill(pid, 0)
        return sock
    except (OSError, ValueError, KeyError, TypeError):
        return paths.socket_path()


def _reply(message: dict[str, Any]) -> dict[str, Any]:
    if not message.get("ok", False):
        raise p.RequestFailed(message)
    return message


class Client:
    """A blocking connection to tunerd: `request(verb, **args)` returns the reply or raises."""

    def __init__(self, path: Path | None = None, timeout: float | None = 60.0):
        self.path = path or daemon_socket()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self.sock.close()
            raise p.DaemonNotRunning(p.NOT_RUNNING_MESSAGE) from e
        self.file = self.sock.makefile("rb")
        self._ids = itertools.count(1)
        try:
            self.hello = self.request("hello", version=p.PROTOCOL_VERSION)
        except ConnectionError as e:
            # A daemon that is dying (or was just killed) can accept and then drop the connection.
            self.close()
            raise p.DaemonNotRunning(p.NOT_RUNNING_MESSAGE) from e

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _read(self) -> dict[str, Any]:
        line = self.file.readline(READ_LIMIT)
        if not line:
            raise ConnectionError("tunerd closed the connection")
        return json.loads(line)

    def send(self, verb: str, **args: Any) -> int:
        rid = next(self._ids)
        self.sock.sendall(p.encode({"id": rid, "verb": verb, **args}))
        return rid

    def request(self, verb: str, **args: Any) -> dict[str, Any]:
        rid = self.send(verb, **args)
        while True:
            message = self._read()
            if message.get("id") == rid and "ok" in message:
                return _reply(message)

    def subscribe(self, job: str, since_seq: int = 0, since_daemon_seq: int = 0) -> Iterator[dict[str, Any]]:
        """The subscribe reply, then every streamed message until the job ends (`end`)."""
        rid = self.send("subscribe", job=job, since_seq=since_seq, since_daemon_seq=since_daemon_seq)
        while True:
            message = self._read()
            if message.get("id") != rid:
                continue
            if "ok" in message:
                yield _reply(message)
                continue
            yield message
            if message.get("end"):
                return


class AsyncClient:
    """An asyncio connection to tunerd, for the TUI's workers."""

    def __init__(self, path: Path | None = None):
        self.path = path or daemon_socket()
        self._ids = itertools.count(1)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> AsyncClient:
        try:
            self.reader, self.writer = await asyncio.open_unix_connection(str(self.path), limit=READ_LIMIT)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise p.DaemonNotRunning(p.NOT_RUNNING_MESSAGE) from e
        try:
            await self.request("hello", version=p.PROTOCOL_VERSION)
        except ConnectionError as e:  # reset, broken pipe, or closed before answering
            await self.close()
            raise p.DaemonNotRunning(p.NOT_RUNNING_MESSAGE) from e
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, BrokenPipeError) as e:
                log.debug("closing: %s", e)

    async def _read(self) -> dict[str, Any]:
        assert self.reader is not None, "call connect() first"
        line = await self.reader.readline()
        if not line:
            raise ConnectionError("tunerd closed the connection")
        return json.loads(line)

    async def send(self, verb: str, **args: Any) -> int:
        assert self.writer is not None, "call connect() first"
        rid = next(self._ids)
        self.writer.write(p.encode({"id": rid, "verb": verb, **args}))
        await self.writer.drain()
        return rid

    async def request(self, verb: str, **args: Any) -> dict[str, Any]:
        rid = await self.send(verb, **args)
        while True:
            message = await self._read()
            if message.get("id") == rid and "ok" in message:
                return _reply(message)

    async def subscribe(self, job: str, since_seq: int = 0, since_daemon_seq: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Streamed messages (`stream`+`event`, then `end`) for one job on this connection."""
        rid = await self.send("subscribe", job=job, since_seq=since_seq, since_daemon_seq=since_daemon_seq)
        while True:
            message = await self._read()
            if message.get("id") != rid:
                continue
            if "ok" in message:
                _reply(message)
                continue
            yield message
            if message.get("end"):
                return


async def follow(job: str, since_seq: int = 0, since_daemon_seq: int = 0,
                 retry_seconds: float = 1.0) -> AsyncIterator[dict[str, Any]]:
    """Like subscribe, but survives a daemon restart: it reconnects and resumes after the last seq."""
    last = {"engine": since_seq, "daemon": since_daemon_seq}
    while True:
        client = AsyncClient()
        try:
            await client.connect()
            async for message in client.subscribe(job, last["engine"], last["daemon"]):
                if "event" in message:
                    last[message["stream"]] = message["event"]["seq"]
                yield message
                if message.get("end"):
                    return
        except (p.DaemonNotRunning, ConnectionError) as e:
            log.info("lost tunerd (%s); reconnecting in %.0fs", e, retry_seconds)
            await asyncio.sleep(retry_seconds)
        finally:
            await client.close()
