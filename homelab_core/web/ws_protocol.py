"""The ``/ws/metrics`` protocol: client messages, subscription filters, server messages.

Everything here is synchronous and knows nothing of sockets or the hub, so that
:mod:`homelab_core.web.ws` holds only the concurrency. The protocol is described in
``docs/websocket.md``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Callable
from typing import Any

import attrs

from .. import __version__
from ..codec import JsonEncoder, to_builtins
from ..events import (
    AlertChanged,
    Event,
    ExecutionFinished,
    HealthChanged,
    InstanceChanged,
    MetricsCollected,
)

#: Largest client message accepted, in bytes of UTF-8.
MAX_MESSAGE_BYTES = 64 * 1024
#: Longest ``batch`` a client may ask for, in seconds: below the close timeout, so that a
#: batching sender still delivers the close frame of a server that stops.
MAX_BATCH = 1.0
#: Most messages, and bytes of their texts, in one ``batch`` message (a replay or a
#: snapshot may need several).
BATCH_MESSAGES = 1024
BATCH_BYTES = 1 << 20
#: Close codes: the server stops, no auth message in time, wrong token.
CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403

#: Every message is text that encodes to UTF-8, as a text frame must: a lone surrogate in
#: a label or a message is sent as a backslash escape, not an error that closes the socket.
_encode = JsonEncoder().text


#: The event types a client can receive (and name in ``subscribe``'s ``types``).
EVENT_TYPES = ("metrics", "status", "execution", "plugin", "alert")


class ProtocolError(Exception):
    """A client message the server refuses; answered with an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- client messages ---------------------------------------------------------------------


@attrs.frozen
class Auth:
    token: str


@attrs.frozen
class Subscribe:
    plugins: frozenset[str] | None = None
    metrics: tuple[str, ...] | None = None
    since: int | None = None
    stream: str | None = None
    types: frozenset[str] | None = None
    batch: float = 0.0


@attrs.frozen
class Ping:
    pass


Message = Auth | Subscribe | Ping


def _strings(data: dict[str, Any], field: str) -> list[str] | None:
    value = data.get(field)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("invalid_message", f"'{field}' must be a list of strings")
    return value


def _parse_subscribe(data: dict[str, Any]) -> Subscribe:
    plugins = _strings(data, "plugins")
    metrics = _strings(data, "metrics")
    since = data.get("since")
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or since < 0):
        raise ProtocolError(
            "invalid_message", "'since' must be a sequence number (an integer >= 0)"
        )
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, str):
        raise ProtocolError("invalid_message", "'stream' must be a string")
    types = _strings(data, "types")
    unknown = sorted(set(types or ()) - set(EVENT_TYPES))
    if unknown:
        raise ProtocolError(
            "invalid_message",
            f"'types' has unknown event types {', '.join(map(repr, unknown))[:200]};"
            f" the types are {', '.join(EVENT_TYPES)}",
        )
    batch = data.get("batch", 0)
    if isinstance(batch, bool) or not isinstance(batch, int | float) or not 0 <= batch <= MAX_BATCH:
        raise ProtocolError(
            "invalid_message",
            f"'batch' must be a number of seconds from 0 to {MAX_BATCH:g} (0: no batching)",
        )
    return Subscribe(
        plugins=None if plugins is None else frozenset(plugins),
        metrics=None if metrics is None else tuple(metrics),
        since=since,
        stream=stream,
        types=None if types is None else frozenset(types),
        batch=float(batch),
    )


def _parse_auth(data: dict[str, Any]) -> Auth:
    token = data.get("token")
    if not isinstance(token, str):
        raise ProtocolError("invalid_message", "'token' must be a string")
    return Auth(token)


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "auth": _parse_auth,
    "subscribe": _parse_subscribe,
    "ping": lambda data: Ping(),
}


def parse_message(raw: str | bytes | None) -> Message:
    """The message a client sent, or a :class:`ProtocolError` saying what is wrong with it."""
    if raw is None:
        raise ProtocolError("invalid_message", "empty message; send a JSON object")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            "too_large", f"messages may have at most {MAX_MESSAGE_BYTES} bytes; this had {size}"
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_message", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "a message must be a JSON object with a 'type'")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "a message must have a 'type' string")
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(
            "unknown_type",
            f"unknown message type {kind[:100]!r}; clients send {', '.join(sorted(_PARSERS))}",
        )
    return parser(data)


# -- events and filters ------------------------------------------------------------------


#: An event as the replay buffer keeps it: (seq, type, plugin_id, ts, text).
Entry = tuple[int, str, str, float, str]


@attrs.frozen
class Frame:
    """One bus event with its sequence number, encoded once for every client."""

    seq: int
    type: str
    plugin_id: str
    ts: float
    data: Any
    text: str

    def entry(self) -> Entry:
        """The frame without its parsed data, for the replay buffer."""
        return (self.seq, self.type, self.plugin_id, self.ts, self.text)


def event_data(event: Event) -> Any:
    """The ``data`` of an event's message: what docs/websocket.md says each type carries."""
    if type(event) is MetricsCollected:
        return to_builtins(event.metrics)
    if type(event) is ExecutionFinished:
        return to_builtins(event.execution)
    if type(event) is HealthChanged:
        return to_builtins(event.new)
    if type(event) is InstanceChanged:
        return {"enabled": event.enabled, "state": event.state.value}
    if type(event) is AlertChanged:
        return {
            "rule": event.rule,
            "fingerprint": event.fingerprint,
            "old": event.old,
            "new": event.new,
            "severity": event.severity,
            "labels": dict(event.labels),
            "summary": event.summary,
            "value": event.value,
            "silenced": event.silenced,
        }
    raise TypeError(f"no wire form for {type(event).__name__}")


def event_text(seq: int, kind: str, plugin_id: str, ts: float, data: Any) -> str:
    return _encode({"type": kind, "seq": seq, "plugin_id": plugin_id, "ts": ts, "data": data})


def make_frame(seq: int, kind: str, plugin_id: str, ts: float, data: Any) -> Frame:
    return Frame(seq, kind, plugin_id, ts, data, event_text(seq, kind, plugin_id, ts, data))


def _metric_name(metric: Any) -> str | None:
    name = metric.get("name") if isinstance(metric, dict) else None
    return name if isinstance(name, str) else None


@attrs.frozen(cache_hash=True)
class Filter:
    """What a subscribed client receives: instance ids, metric name patterns, event types.

    ``None`` lets everything through; an empty collection lets nothing through. An
    ``alert`` event passes ``plugins`` by the instance it is about; one about no instance
    (``plugin_id`` "") only when ``plugins`` is None.
    """

    plugins: frozenset[str] | None = None
    patterns: tuple[str, ...] | None = None
    types: frozenset[str] | None = None
    _regex: re.Pattern[str] | None = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(
            lambda self: (
                None
                if self.patterns is None
                else re.compile("|".join(fnmatch.translate(p) for p in self.patterns) or "(?!)")
            ),
            takes_self=True,
        ),
    )

    def wants_plugin(self, plugin_id: str) -> bool:
        return self.plugins is None or plugin_id in self.plugins

    def wants(self, kind: str, plugin_id: str) -> bool:
        """Whether events of type ``kind`` about ``plugin_id`` pass (metric names aside)."""
        return (self.types is None or kind in self.types) and (
            self.plugins is None or plugin_id in self.plugins
        )

    def select(self, metrics: list[Any]) -> list[Any]:
        """The metrics (dicts with a ``name``) whose name matches a pattern."""
        if self._regex is None:
            return metrics
        match = self._regex.match
        return [m for m in metrics if (name := _metric_name(m)) is not None and match(name)]

    def render_entry(self, entry: Entry) -> str | None:
        """:meth:`render` for a replay buffer entry (its data parsed only if needed)."""
        seq, kind, plugin_id, ts, text = entry
        if not self.wants(kind, plugin_id):
            return None
        if self._regex is None or kind != "metrics":
            return text
        return self.render(Frame(seq, kind, plugin_id, ts, json.loads(text)["data"], text))

    def render(self, frame: Frame) -> str | None:
        """The frame's text for this filter, or None if nothing of it passes."""
        if not self.wants(frame.type, frame.plugin_id):
            return None
        if self._regex is None or frame.type != "metrics":
            return frame.text
        metrics = frame.data if isinstance(frame.data, list) else []
        kept = self.select(metrics)
        if not kept:
            return None
        if len(kept) == len(metrics):
            return frame.text
        return event_text(frame.seq, frame.type, frame.plugin_id, frame.ts, kept)


EVERYTHING = Filter()


# -- server messages ---------------------------------------------------------------------


def hello(*, seq: int, heartbeat: float, auth_required: bool, stream: str) -> str:
    return _encode(
        {
            "type": "hello",
            "version": __version__,
            "seq": seq,
            "heartbeat": heartbeat,
            "auth_required": auth_required,
            "stream": stream,
        }
    )


def snapshot(*, seq: int, resumed: bool, plugins: dict[str, Any]) -> str:
    return _encode({"type": "snapshot", "seq": seq, "resumed": resumed, "plugins": plugins})


def lagged(*, missed: int, seq: int) -> str:
    return _encode({"type": "lagged", "missed": missed, "seq": seq})


def heartbeat(*, seq: int) -> str:
    return _encode({"type": "heartbeat", "seq": seq, "ts": time.time()})


def authenticated(*, seq: int) -> str:
    return _encode({"type": "authenticated", "seq": seq})


def error(code: str, message: str) -> str:
    return _encode({"type": "error", "code": code, "message": message})


def batch(texts: list[str]) -> str:
    """One ``batch`` message carrying ``texts``, messages already encoded, in order."""
    return '{"type":"batch","messages":[' + ",".join(texts) + "]}"


PONG = _encode({"type": "pong"})
