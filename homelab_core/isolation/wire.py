r"""What the hub and a worker process say to each other over the worker's pipes.

Every message is one frame: four bytes of length (big-endian), then a MessagePack array
whose first item names the message. MessagePack (msgspec's) is compact and fast to make
and read; a run of 50 metrics is about 2 kB. The messages:

=================================================  =========================================
hub to worker                                      worker to hub
=================================================  =========================================
``["init", sys_path, parent_pid, limit, level]``   ``["ready", pid]``
``["open", id, pickled (class, config)]``          ``["opened", id, error or None]``
``["call", call, id, method, clock]``              ``["ok", call, result, cpu, peak, rss]``
``["close", id]``                                  ``["error", call, error, cpu, peak, rss]``
``["exit"]``                                       ``["log", level, logger, text]``
\                                                  ``["limit", rss]`` (then it exits)
=================================================  =========================================

``open`` carries the plugin's class and its options (secrets too) pickled: they reach the
worker over its pipe, never in its arguments or environment. ``call`` is answered by an
``ok`` or an ``error`` with the same call number; ``cpu`` is the CPU seconds the worker
spent meanwhile, ``peak`` its peak resident memory and ``rss`` its resident memory, in
bytes. Metrics travel as arrays of their fields (:func:`metric_row`), health reports as
``[state, message]`` and errors as ``[kind, text, retry_after]``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgspec

from ..errors import SetupFailed, SetupNotReady
from ..model import HealthReport, Metric

#: The length prefix of a frame.
HEADER = struct.Struct(">I")
#: Exit status of a worker that exceeded its memory limit (after a ``limit`` message).
EXIT_MEMORY = 86
#: Exit status of a worker whose request pipe broke or carried something unreadable.
EXIT_PROTOCOL = 87
#: The largest frame either side accepts (a run of 20,000 metrics is about 1 MiB).
MAX_FRAME = 256 * 1024 * 1024

_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder().decode


def frame(message: Sequence[Any]) -> bytes:
    """``message`` as one frame: its length, then its MessagePack bytes."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def parse(body: bytes) -> list[Any]:
    """A frame's body (without its length) as the message it holds."""
    message = _decode(body)
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise ValueError(f"not a message of the worker protocol: {message!r:.80}")
    return message


def metric_row(metric: Metric) -> tuple[Any, ...]:
    """A metric as the array that carries it (its timestamp may be None: the hub stamps
    it with the time of the collection, as for an in-process run)."""
    return (
        metric.name,
        metric.value,
        metric.unit,
        metric.labels,
        metric.timestamp,
        metric.kind.value,
        metric.device_class,
    )


def metric_of(row: Sequence[Any], stamp: float) -> Metric:
    """The metric :func:`metric_row` made ``row`` of, checked again by :class:`Metric`
    (the worker runs plugin code: nothing it sends is taken on trust); stamped with
    ``stamp`` when it carries no time."""
    name, value, unit, labels, timestamp, kind, device_class = row
    return Metric(
        name,
        value,
        unit,
        labels,
        float(stamp if timestamp is None else timestamp),
        kind,
        device_class,
    )


def report_row(report: HealthReport | None) -> list[str] | None:
    """A health report as ``[state, message]`` (None stays None)."""
    return None if report is None else [report.state.value, report.message]


def report_of(row: Sequence[str] | None) -> HealthReport | None:
    """The health report :func:`report_row` made ``row`` of."""
    return None if row is None else HealthReport(row[0], row[1])


def error_row(kind: str, text: str, retry_after: float | None = None) -> list[Any]:
    """An error as ``[kind, text, retry_after]``: ``kind`` is ``setup_failed``,
    ``not_ready`` or ``error``; ``text`` is the exception as one line."""
    return [kind, text, retry_after]


class RemoteError(Exception):
    """An exception a plugin raised in its worker process, known by its one-line
    description (``"ValueError: no such disk"``), which is what its execution records."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def error_of(row: Sequence[Any]) -> Exception:
    """The exception to raise in the hub for an error row: :class:`SetupFailed` and
    :class:`SetupNotReady` keep their class (the scheduler acts on them); every other
    exception is a :class:`RemoteError` carrying its description."""
    kind, text, retry_after = row
    message = str(text).partition(": ")[2]
    if kind == "setup_failed":
        return SetupFailed(message)
    if kind == "not_ready":
        return SetupNotReady(message, retry_after=retry_after)
    return RemoteError(str(text))
