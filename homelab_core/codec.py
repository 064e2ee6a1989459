"""The one codec of the domain types: attrs classes to JSON-ready values and to bytes.

msgspec encodes attrs classes, enums and containers directly, so no class writes its own
``to_dict`` by hand: :class:`~homelab_core.model.Execution`, the events of
:mod:`homelab_core.events` and the API's responses are all encoded here, the same way.
Labels are written one way for every place that keys on them (the series key, the store's
series table): :func:`labels_json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

_T = TypeVar("_T")
#: Keys sorted, so that equal values always encode to the same bytes.
_json = msgspec.json.Encoder(order="sorted")


def to_builtins(obj: Any) -> Any:
    """``obj`` as dicts, lists, text and numbers (enums by value)."""
    return msgspec.to_builtins(obj)


def to_json(obj: Any) -> bytes:
    """``obj`` as compact JSON bytes, object keys sorted."""
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


def storable_text(text: str) -> str:
    """``text`` as every supported database and encoder takes it: NUL characters and lone
    surrogates (what ``os.fsdecode`` makes of a non-UTF-8 file name) as backslash escapes.

    For text the framework does not refuse but must keep, such as a plugin's exception
    message: PostgreSQL refuses NUL in text, and UTF-8 encoders refuse lone surrogates.
    """
    if text.isascii() and "\x00" not in text:
        return text
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe.replace("\x00", "\\x00")
