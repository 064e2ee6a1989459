"""The one place the framework reads the time that plugins see.

:func:`wall` and :func:`monotonic` read the installed time source, or ``time.time`` and
``time.monotonic`` when none is. ``Plugin.now()`` and ``Plugin.monotonic()`` call them,
and the runner stamps metrics that carry no timestamp with :func:`wall`. Tests install a
controllable clock (:class:`homelab_core.testing.Clock`) with :func:`use`, so that rates,
counters and durations computed through these functions move when the test says so.

The source is process-wide, not per task: plugin methods run in worker threads too. The
scheduler's own timing (intervals, timeouts, sleeps) does not read it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class TimeSource(Protocol):
    """What :func:`use` installs: wall-clock and monotonic time, in seconds."""

    def now(self) -> float:
        """Wall-clock time, as ``time.time()``."""
        ...

    def monotonic(self) -> float:
        """Monotonic time, as ``time.monotonic()``."""
        ...


_source: TimeSource | None = None


def wall() -> float:
    """Wall-clock seconds since the epoch, from the installed source or ``time.time()``."""
    source = _source
    return time.time() if source is None else source.now()


def monotonic() -> float:
    """Monotonic seconds, from the installed source or ``time.monotonic()``."""
    source = _source
    return time.monotonic() if source is None else source.monotonic()


def current() -> TimeSource | None:
    """The installed source; None while the real clock is used."""
    return _source


@contextmanager
def use(source: TimeSource | None) -> Iterator[None]:
    """Install ``source`` (None: the real clock) until the block ends, then restore."""
    global _source
    previous, _source = _source, source
    try:
        yield
    finally:
        _source = previous
