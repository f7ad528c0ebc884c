"""The wire format shared by tunerd and its clients: versions, limits, states and message shapes.

Requests and replies are single JSON objects, one per line (UTF-8, newline-terminated).

    request   {"id": <int|str>, "verb": <str>, ...arguments}
    reply     {"id": <same>, "ok": true, ...result}
              {"id": <same>, "ok": false, "error": <message>, "code": <one of ERROR_CODES>}

The first request on a connection must be `hello` with `version` == PROTOCOL_VERSION; anything
else is refused and the connection is closed. A `subscribe` request is answered by one reply and
then a stream of messages carrying the same id:

    {"id": ..., "stream": "engine", "event": {...}}   a line of the job's events.jsonl
    {"id": ..., "stream": "daemon", "event": {...}}   a line of the job's daemon-events.jsonl
    {"id": ..., "end": true, "job": {...}}             the job reached a final state and every
                                                       event written before that has been sent

How job state reaches clients: the engine alone writes events.jsonl (phases, progress, ...);
the daemon alone writes daemon-events.jsonl, with its own `seq`:
    status   job_state, previous, reason       every state change (queued, starting, ...)
    memory   source="nvml", devices: [{device, name, used, total}]   GPU-wide, every few seconds
Each stream is sent in seq order, every event once; `subscribe(job, since_seq, since_daemon_seq)`
after a reconnect continues exactly after the last seq of each stream the client saw. The
`job` in the subscribe reply and in `end` is the current record (job.json).
"""
from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
DAEMON_VERSION = "0.1.0"

# A request or a streamed message never exceeds this; a longer line from a client is refused
# and its connection closed (the rest of that line cannot be told apart from the next request).
MAX_LINE = 1024 * 1024

VERBS = (
    "hello", "ping", "status", "shutdown",
    "submit", "list", "show", "logs", "subscribe",
    "cancel", "stop_job", "save", "sample", "resume", "rm",
)

ERROR_CODES = (
    "bad_request",      # not JSON, not an object, missing or wrong-typed field
    "version",          # handshake refused
    "handshake",        # a verb before hello
    "unknown_verb",
    "too_large",        # line longer than MAX_LINE
    "not_found",        # no such job
    "conflict",         # the job's state does not allow this (rm while running, ...)
    "invalid",          # the submitted config has errors
    "internal",         # a bug in tunerd; the message says where to look
)

# Job states and the transitions allowed between them (supervisor-style: checked, never implied).
QUEUED, STARTING, RUNNING, STOPPING = "queued", "starting", "running", "stopping"
DONE, FAILED, STOPPED, INTERRUPTED = "done", "failed", "stopped", "interrupted"
ACTIVE_STATES = (STARTING, RUNNING, STOPPING)
FINAL_STATES = (DONE, FAILED, STOPPED, INTERRUPTED)
STATES = (QUEUED, *ACTIVE_STATES, *FINAL_STATES)
TRANSITIONS: dict[str, tuple[str, ...]] = {
    QUEUED: (STARTING, STOPPED),              # stopped: cancelled before it ran
    STARTING: (RUNNING, FAILED, STOPPED, INTERRUPTED),
    RUNNING: (STOPPING, DONE, FAILED, STOPPED, INTERRUPTED),
    STOPPING: (DONE, FAILED, STOPPED, INTERRUPTED),
    DONE: (QUEUED,),                          # queued again: `resume`
    FAILED: (QUEUED,),
    STOPPED: (QUEUED,),
    INTERRUPTED: (QUEUED,),
}


class ProtocolError(Exception):
    """A request that cannot be served; becomes an error reply, never a crash."""

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra  # structured details for scripts (e.g. the list of config errors)


class DaemonNotRunning(Exception):
    """No daemon answers on the socket."""


class RequestFailed(Exception):
    """The daemon answered a request with an error reply."""

    def __init__(self, reply: dict[str, Any]):
        super().__init__(reply.get("error", "request failed"))
        self.code = reply.get("code", "internal")
        self.reply = reply


NOT_RUNNING_MESSAGE = "tunerd is not running — start it with `tunerd start`"


def encode(message: dict[str, Any]) -> bytes:
    """One message as a JSON line."""
    return (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode("utf-8")


def decode_request(line: bytes) -> dict[str, Any]:
    """Parse one request line, raising ProtocolError for anything that is not a usable request."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError("bad_request", f"request is not valid JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("bad_request", "request is nested too deeply") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_request", "request must be a JSON object")
    if not isinstance(message.get("verb"), str):
        raise ProtocolError("bad_request", "request needs a string field `verb`")
    rid = message.get("id")
    if rid is not None and not isinstance(rid, (int, str)):
        raise ProtocolError("bad_request", "`id` must be a number or a string")
    return message


def arg(message: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """A typed request argument; missing or wrong-typed ones are a bad_request error."""
    if name not in message or message[name] is None:
        if default is ...:
            raise ProtocolError("bad_request", f"`{message.get('verb')}` needs the argument `{name}`")
        return default
    value = message[name]
    # bool is an int subclass; a `true` where a number belongs is a client bug worth naming.
    if isinstance(value, bool) and kind is int:
        raise ProtocolError("bad_request", f"`{name}` must be a number")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ProtocolError("bad_request", f"`{name}` must be {names}, got {type(value).__name__}")
    return value
