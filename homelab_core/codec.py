"""The one codec of the domain types: attrs classes to JSON-ready values and to bytes.

msgspec encodes attrs classes, enums and containers directly, so no class writes its own
``to_dict`` by hand: :class:`~homelab_core.model.Execution`, the events of
:mod:`homelab_core.events` and the API's responses are all encoded here, the same way.
Labels are written one way for every place that keys on them (the series key, the store's
series table): :func:`labels_json`.

No text can make an encoder fail for the rest of what it encodes: a lone surrogate (what
``os.fsdecode`` makes of a non-UTF-8 file name, which UTF-8 cannot encode) is written as a
backslash escape, ``\\udce9``, the form :func:`storable_text` gives it in the store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

_T = TypeVar("_T")
log = logging.getLogger("homelab.codec")
#: Texts :func:`utf8_text` had to escape since the process started.
_escaped = 0


class JsonEncoder:
    """Compact JSON (msgspec) that never fails on text UTF-8 cannot encode.

    The fast path is msgspec's own encoding; only when that meets a lone surrogate is the
    value rebuilt with every such text escaped (:func:`encodable`), so one bad label costs
    nothing to the values around it and the values never cost a copy.

    :param sort_keys: sort object keys, so that equal values encode to equal bytes.
    """

    def __init__(self, *, sort_keys: bool = False) -> None:
        self._encode = msgspec.json.Encoder(order="sorted" if sort_keys else None).encode

    def encode(self, obj: Any) -> bytes:
        """``obj`` as UTF-8 JSON bytes."""
        try:
            return self._encode(obj)
        except UnicodeEncodeError:
            return self._encode(encodable(msgspec.to_builtins(obj)))

    def text(self, obj: Any) -> str:
        """``obj`` as JSON text that encodes to UTF-8 (a WebSocket text frame, say)."""
        return self.encode(obj).decode("utf-8")


#: Keys sorted, so that equal values always encode to the same bytes.
_json = JsonEncoder(sort_keys=True)


def to_builtins(obj: Any) -> Any:
    """``obj`` as dicts, lists, text and numbers (enums by value)."""
    return msgspec.to_builtins(obj)


def to_json(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes, object keys sorted; lone surrogates escaped."""
    return _json.encode(obj)


def from_builtins(data: Any, cls: type[_T]) -> _T:
    """Rebuild a ``cls`` from :func:`to_builtins` output, checking the types."""
    return msgspec.convert(data, cls)


def labels_json(labels: Mapping[str, str]) -> str:
    """The canonical text of a label set: JSON, keys sorted, no spaces, ASCII only.

    Stored in the series table as part of a series' identity, so it must never change for
    existing stores (``json`` escapes non-ASCII text, which msgspec would not).
    """
    return json.dumps(labels, sort_keys=True, separators=(",", ":"))


def utf8_text(text: str) -> str:
    """``text`` with every lone surrogate as a backslash escape (``\\udce9``): text that
    encodes to UTF-8. Returns ``text`` itself when it has none (the common case)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        global _escaped
        _escaped += 1
        escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if _escaped == 1:
            log.warning(
                "text that is not valid UTF-8 (a lone surrogate, as os.fsdecode gives for a"
                " non-UTF-8 file name) is shown with backslash escapes: %r (counted in"
                " homelab_core_texts_escaped_total; logged once)",
                escaped[:200],
            )
        return escaped
    return text


def escaped_texts() -> int:
    """How many times :func:`utf8_text` escaped a text since the process started (each
    encoding counts: a bad label on ``/metrics`` counts once per scrape)."""
    return _escaped


def encodable(value: Any) -> Any:
    """``value`` (dicts, lists, tuples and text from :func:`to_builtins`) with every text,
    keys included, passed through :func:`utf8_text`."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable(v) for v in value]
    return value


def storable_text(text: str) -> str:
    """``text`` as every supported database and encoder takes it: NUL characters and lone
    surrogates (what ``os.fsdecode`` makes of a non-UTF-8 file name) as backslash escapes.

    For text the framework does not refuse but must keep, such as a plugin's exception
    message: PostgreSQL refuses NUL in text, and UTF-8 encoders refuse lone surrogates.
    """
    if text.isascii() and "\x00" not in text:
        return text
    return utf8_text(text).replace("\x00", "\\x00")
