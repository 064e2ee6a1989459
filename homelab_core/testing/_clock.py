"""A clock that moves only when the test says so."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from .. import clock as framework_clock


class Clock:
    """Wall-clock and monotonic time under the test's control.

    Installed (by :meth:`installed`, the ``clock=`` argument of :func:`run_plugin`, or the
    ``homelab_clock`` fixture), it is what ``Plugin.now()``, ``Plugin.monotonic()`` and
    :func:`homelab_core.clock.wall` / :func:`~homelab_core.clock.monotonic` return, and
    the timestamp the runner gives metrics that carry none. It stands still until
    :meth:`advance` or :meth:`set` moves it.

    It does not control anyio or asyncio sleeps, timeouts, the scheduler's intervals, the
    framework's own bookkeeping times (execution start times, health ``since``), nor a
    plugin's own calls of ``time.time()`` / ``time.monotonic()``.

    :param start: the wall-clock time to start at (seconds since the epoch or an aware
        ``datetime``); the real time now if not given.
    :param monotonic: the monotonic time to start at.
    """

    def __init__(self, start: float | datetime | None = None, *, monotonic: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._wall = time.time() if start is None else _seconds(start)
        self._monotonic = float(monotonic)

    def now(self) -> float:
        """The wall-clock time, in seconds since the epoch."""
        return self._wall

    def monotonic(self) -> float:
        """The monotonic time, in seconds."""
        return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (not negative)."""
        if not seconds >= 0:
            raise ValueError(
                f"Clock.advance() takes a non-negative number of seconds, got {seconds!r}"
            )
        with self._lock:
            self._wall += seconds
            self._monotonic += seconds

    def set(self, wall: float | datetime | None = None, *, monotonic: float | None = None) -> None:
        """Set the wall-clock time (it may jump back, as a real one can) and/or the
        monotonic time (which may only move forward)."""
        with self._lock:
            if monotonic is not None:
                if monotonic < self._monotonic:
                    raise ValueError(
                        f"monotonic time cannot go back: it is {self._monotonic:g},"
                        f" asked for {monotonic:g}"
                    )
                self._monotonic = float(monotonic)
            if wall is not None:
                self._wall = _seconds(wall)

    @contextmanager
    def installed(self) -> Iterator[Clock]:
        """Make this the framework's clock until the block ends (then restore the previous)."""
        with framework_clock.use(self):
            yield self

    def __repr__(self) -> str:
        return f"Clock(now={self._wall!r}, monotonic={self._monotonic!r})"


def _seconds(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("Clock needs an aware datetime (with tzinfo), got a naive one")
        return value.timestamp()
    return float(value)
