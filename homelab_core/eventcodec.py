"""Events as bytes, for a bus that crosses processes (:mod:`homelab_core.bus_redis`).

An encoded event is compact JSON (msgspec): a three-item array ``[node, type, event]``,
where ``node`` names the node that published it, ``type`` is the event's
:attr:`~homelab_core.events.Event.type` and ``event`` the event's fields as
:func:`~homelab_core.codec.to_builtins` writes them. :func:`decode_event` rebuilds the very
same attrs object (``==`` to the one encoded: metrics, health, executions, enums and
timestamps included; floats keep every bit).

Text UTF-8 cannot encode (a lone surrogate, which a :class:`~homelab_core.model.Metric`
refuses but a health message or an alert's summary may still hold) never makes encoding
fail: it is written with backslash escapes, as everywhere else (:mod:`homelab_core.codec`),
so such a text arrives as its escaped form.
"""

from __future__ import annotations

from typing import Any

import attrs
import msgspec

from .codec import JsonEncoder
from .events import (
    AlertChanged,
    Event,
    EventType,
    ExecutionFinished,
    HealthChanged,
    InstanceChanged,
    MetricsCollected,
)

#: Every event class by its wire type.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (MetricsCollected, HealthChanged, ExecutionFinished, InstanceChanged, AlertChanged)
}


class EventCodecError(ValueError):
    """Bytes that are not an encoded event (named in the message)."""


class _Envelope(msgspec.Struct, array_like=True):
    node: str
    type: str
    event: msgspec.Raw


@attrs.frozen
class Decoded:
    """An event read back, with the node that published it."""

    node: str
    event: Event


_encoder = JsonEncoder()
_envelope = msgspec.json.Decoder(_Envelope)
_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items()
}


def encode_event(event: Event, node: str) -> bytes:
    """``event``, published by ``node``, as bytes :func:`decode_event` reads."""
    kind: EventType | None = getattr(type(event), "type", None)
    if kind is None or EVENT_TYPES.get(kind) is not type(event):
        raise TypeError(f"not a bus event type: {type(event).__name__}")
    return _encoder.encode((node, kind, event))


def decode_event(data: bytes) -> Decoded:
    """The event in ``data`` and the node that published it.

    Raises :class:`EventCodecError` naming what is wrong for anything else (bad JSON, an
    unknown type, fields that do not fit the type).
    """
    try:
        envelope = _envelope.decode(data)
    except msgspec.ValidationError as exc:
        raise EventCodecError(f"not an encoded event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise EventCodecError(f"not an encoded event (bad JSON): {exc}") from None
    decoder = _decoders.get(envelope.type)
    if decoder is None:
        raise EventCodecError(
            f"unknown event type {envelope.type!r} from node {envelope.node!r}"
            f" (known: {', '.join(sorted(EVENT_TYPES))})"
        )
    try:
        event = decoder.decode(envelope.event)
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError, ValueError) as exc:
        raise EventCodecError(
            f"event of type {envelope.type!r} from node {envelope.node!r} does not decode: {exc}"
        ) from None
    return Decoded(envelope.node, event)
