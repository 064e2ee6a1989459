"""Noticing when the event loop stops turning, and whose code held it.

An async plugin method that calls blocking code (``time.sleep``, a synchronous HTTP
client, a long computation) holds the event loop: every other instance, the web server
and the WebSocket heartbeats wait until it returns, and its own timeout cannot fire. One
process cannot prevent that; it can see it and say who did it.

:class:`LoopWatchdog` runs a heartbeat task on the loop, which notes the time every
``threshold / 4`` seconds, and a daemon thread that checks the heartbeat. When the
heartbeat is older than ``threshold``, the thread takes the loop thread's stack
(:func:`sys._current_frames`) and looks in it for the :class:`~homelab_core.runner.Runner`
of the instance whose method is running. A late heartbeat alone does not name anyone: a
loop with more ready work than it can do in time (thousands of runs at once) is late too,
while each callback is short. An instance is named only if the same call of its method
is on the stack in every sample for ``threshold / 2`` seconds (the loop never left it):
that runner's call is then marked as holding the loop (the runner turns it into a note,
or a timeout, on that call's execution). When the loop turns again the heartbeat task
closes the stall: counted, logged (once per instance; a late loop that no instance held,
once a minute at most), and kept as :attr:`LoopWatchdog.last_stall` so that the ticks
other instances missed meanwhile can name the instance that caused them.

A stall shorter than ``threshold`` plus half of it may go unnoticed or unnamed.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from types import FrameType
from typing import NamedTuple

import anyio

from .runner import Runner

log = logging.getLogger("homelab.watchdog")

#: The code objects whose frames say which instance runs: Runner.call's.
_RUNNER_CODE = Runner.call.__code__


class Stall(NamedTuple):
    """One stretch of time in which the event loop did not turn."""

    instance_id: str | None
    where: str
    seconds: float
    ended: float


class _Seen(NamedTuple):
    """What the thread found while the loop was stalled (for the heartbeat to close):
    the runner once named, else the call seen in the samples so far and since when."""

    beat: float
    runner: Runner | None
    where: str
    call: FrameType | None = None
    since: float = 0.0


def culprit(frame: FrameType | None) -> tuple[FrameType | None, str]:
    """The frame of ``Runner.call`` on the stack under ``frame`` (innermost first), and
    the innermost code location as ``file:line in function``."""
    where = ""
    if frame is not None:
        code = frame.f_code
        where = f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
    while frame is not None:
        if frame.f_code is _RUNNER_CODE:
            return frame, where
        frame = frame.f_back
    return None, where


def _runner_of(call: FrameType) -> Runner | None:
    runner = call.f_locals.get("self")
    return runner if isinstance(runner, Runner) else None


class LoopWatchdog:
    """Watches the event loop it runs on; see the module's documentation.

    :param threshold: seconds without a heartbeat that count as a stall.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = min(max(threshold / 4, 0.01), 0.25)
        #: Stalls seen since start, and the seconds they lasted in all.
        self.stalls = 0
        self.stalled_seconds = 0.0
        #: The latest stall that ended.
        self.last_stall: Stall | None = None
        self._beat = time.monotonic()
        self._seen: _Seen | None = None
        self._loop_thread = 0
        self._logged: set[str] = set()
        self._late_logged = -math.inf

    def blocker(self, since: float) -> str | None:
        """The instance that held the loop in a stall going on or ended after ``since``
        (monotonic seconds), if one did."""
        seen = self._seen
        if seen is not None and seen.runner is not None:
            return seen.runner.instance_id
        last = self.last_stall
        if last is not None and last.ended >= since:
            return last.instance_id
        return None

    async def run(self) -> None:
        """The heartbeat; starts the watching thread, and stops it when cancelled."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        stop = threading.Event()
        thread = threading.Thread(
            target=self._watch, args=(stop,), name="homelab loop watchdog", daemon=True
        )
        thread.start()
        try:
            while True:
                await anyio.sleep(self.period)
                now = time.monotonic()
                seen = self._seen
                if seen is not None and seen.beat == self._beat:
                    self._close(seen, now - seen.beat, now)
                self._beat = now
        finally:
            stop.set()

    def _watch(self, stop: threading.Event) -> None:
        """The thread: sample the loop's stack while it is stalled, until a call that
        never leaves the stack is found (or the loop turns again)."""
        confirm = self.threshold / 2
        while not stop.wait(self.period):
            beat, now = self._beat, time.monotonic()
            if now - beat < self.threshold:
                continue
            seen = self._seen
            if seen is not None and seen.beat == beat and seen.runner is not None:
                continue  # named already
            call, where = culprit(sys._current_frames().get(self._loop_thread))
            if seen is None or seen.beat != beat or call is None or call is not seen.call:
                # A new stall, or the loop moved on to other work: start again.
                self._seen = _Seen(beat, None, where, call, now)
                continue
            if now - seen.since >= confirm:
                runner = _runner_of(call)
                if runner is not None:
                    runner.stall_started = beat
                self._seen = seen._replace(runner=runner, where=where)

    def _close(self, seen: _Seen, seconds: float, now: float) -> None:
        """On the loop again after a stall: count it, charge it, log it (once per culprit)."""
        self._seen = None
        self.stalls += 1
        self.stalled_seconds += seconds
        runner = seen.runner
        instance_id = runner.instance_id if runner is not None else None
        if runner is not None and runner.stall_started == seen.beat:
            runner.stall_started = None
            runner.stalled += seconds
        self.last_stall = Stall(instance_id, seen.where, seconds, now)
        if instance_id is None:
            # Late, but no one call held the loop: more ready work than it could do.
            if now - self._late_logged >= 60:
                self._late_logged = now
                log.warning(
                    "the event loop was %.2f s late, with no single instance holding it:"
                    " more work was ready than it could do in time (logged once a minute"
                    " at most; homelab_core_loop_stalls_total counts every time)",
                    seconds,
                )
            return
        if instance_id in self._logged:
            log.debug("event loop blocked for %.2f s by %s (%s)", seconds, instance_id, seen.where)
            return
        self._logged.add(instance_id)
        log.warning(
            "plugin instance %r blocked the event loop for %.2f s (at %s); every other"
            " instance and the web server waited. Blocking code belongs in a sync method,"
            " which runs in a worker thread. (Logged once for this instance.)",
            instance_id,
            seconds,
            seen.where,
        )
