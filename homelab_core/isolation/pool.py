"""The hub's side of worker processes: starting them, talking to them, ending them.

A :class:`Workers` pool belongs to one scheduler (or one ``homelab run --once``). It keeps
at most one live :class:`WorkerProcess` per worker name: an isolated instance's own id,
or the ``worker = "name"`` its group shares. Workers start when an instance first needs
one, are reused across runs, and stop when their last instance stops, or with the pool.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, suppress
from types import TracebackType
from typing import Any

import anyio
import attrs
from anyio.abc import Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from .. import clock
from ..errors import InvalidArgumentError
from . import wire

log = logging.getLogger("homelab.isolation")

#: Seconds a worker has to start (import its modules) and say it is ready.
START_TIMEOUT = 30.0
_MB = 1024 * 1024


class WorkerLost(Exception):
    """The worker process ended, or was ended, while a call waited for it (or before)."""


@attrs.define
class WorkerStats:
    """What :meth:`Workers.stats` tells about one worker name (its current process and
    the ones before it)."""

    #: The worker's name: an instance id, or a group's ``worker = "name"``.
    name: str
    #: The live process's id; None while none runs.
    pid: int | None = None
    #: Processes started under this name.
    starts: int = 0
    #: Processes that ended while in use: crashed, killed, over their memory limit,
    #: or ended because a run timed out.
    losses: int = 0
    #: CPU seconds the processes spent in calls of plugin methods.
    cpu_seconds: float = 0.0
    #: Resident memory of the live process after its last call, in bytes.
    rss: int = 0
    #: Peak resident memory of the live process, in bytes.
    peak_rss: int = 0


@attrs.define(eq=False)
class _Call:
    done: anyio.Event = attrs.field(factory=anyio.Event)
    reply: list[Any] | None = None
    lost: str | None = None


def worker_environment() -> dict[str, str]:
    """The environment a worker starts with: the hub's, less every ``HOMELAB_*`` variable
    (settings and their secrets reach the worker over its pipe, not its environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["MALLOC_ARENA_MAX"] = "2"  # keeps the address space near the resident memory
    return env


def clock_reading() -> list[float] | None:
    """The installed test clock's readings, for a call to carry; None for the real clock."""
    source = clock.current()
    return None if source is None else [source.now(), source.monotonic()]


class WorkerProcess:
    """One worker process and the calls waiting for its answers."""

    def __init__(
        self, name: str, stats: WorkerStats, memory_limit: int | None, kill_grace: float
    ) -> None:
        self.name = name
        self.stats = stats
        self.memory_limit = memory_limit
        self.kill_grace = kill_grace
        self.process: Process | None = None
        self.pid: int | None = None
        #: The instances whose plugin objects are open in it.
        self.instances: set[str] = set()
        self.alive = False
        #: Why it ended ("" while it runs).
        self.reason = ""
        self._stopping = ""
        self._in_use = False
        self._over_limit: int | None = None
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._opens: dict[str, _Call] = {}
        self._ready = anyio.Event()
        self._ended = anyio.Event()
        self._send_lock = anyio.Lock()

    # -- starting ----------------------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Start the process and wait until it is ready; :class:`WorkerLost` if it cannot."""
        try:
            self.process = await anyio.open_process(
                [sys.executable, "-m", "homelab_core.isolation"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
                env=worker_environment(),
                # Out of the terminal's process group: Ctrl-C reaches the hub, which stops
                # its workers in order, instead of every worker at once.
                start_new_session=True,
            )
        except OSError as exc:
            raise WorkerLost(f"cannot start a worker process: {exc}") from exc
        self.pid = self.stats.pid = self.process.pid
        self.stats.starts += 1
        self.alive = True
        tg.start_soon(self._read, name=f"homelab:worker-{self.name}")
        level = logging.getLogger().getEffectiveLevel()
        await self._send(["init", list(sys.path), os.getpid(), self.memory_limit, level])
        with anyio.move_on_after(START_TIMEOUT):
            await self._ready.wait()  # set by its ready message, or by its end
        if not self._ready.is_set():
            await self.stop(f"it did not start within {START_TIMEOUT:g} s", graceful=False)
        if not self.alive:
            raise WorkerLost(self.reason)

    # -- talking -----------------------------------------------------------------------------

    async def _send(self, message: list[Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        data = wire.frame(message)
        try:
            async with self._send_lock:
                await self.process.stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            await self._ended.wait()
            raise WorkerLost(self.reason) from exc

    async def open(self, instance_id: str, blob: bytes) -> list[Any] | None:
        """Create an instance's plugin object in the worker; the error row if that failed."""
        if not self.alive:
            raise WorkerLost(self.reason)
        slot = self._opens[instance_id] = _Call()
        # Counted from now: a group's worker is not stopped while a member is opening.
        self.instances.add(instance_id)
        try:
            await self._send(["open", instance_id, blob])
            await slot.done.wait()
        finally:
            self._opens.pop(instance_id, None)
            if slot.reply is None or slot.reply[2] is not None:
                self.instances.discard(instance_id)
        if slot.lost is not None:
            raise WorkerLost(slot.lost)
        assert slot.reply is not None
        error: list[Any] | None = slot.reply[2]
        return error

    async def call(self, instance_id: str, method: str) -> list[Any]:
        """Call one method of an instance's plugin object; its ``ok`` or ``error`` reply."""
        if not self.alive:
            raise WorkerLost(self.reason)
        call_id = next(self._ids)
        slot = self._calls[call_id] = _Call()
        try:
            await self._send(["call", call_id, instance_id, method, clock_reading()])
            await slot.done.wait()
        finally:
            self._calls.pop(call_id, None)
        if slot.lost is not None:
            raise WorkerLost(f"{slot.lost}, during {method}()")
        assert slot.reply is not None
        return slot.reply

    async def close(self, instance_id: str) -> None:
        """Drop an instance's plugin object (after its teardown)."""
        self.instances.discard(instance_id)
        if self.alive:
            with suppress(WorkerLost):
                await self._send(["close", instance_id])

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        reader = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                (size,) = wire.HEADER.unpack(await reader.receive_exactly(wire.HEADER.size))
                if size > wire.MAX_FRAME:
                    raise ValueError(f"a frame of {size} bytes")
                self._dispatch(wire.parse(await reader.receive_exactly(size)))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.ClosedResourceError):
            pass
        except Exception as exc:  # a worker that says something unreadable is ended
            log.error("worker %r sent something unreadable (%s); ending it", self.name, exc)
            self.process.kill()
        with anyio.CancelScope(shield=True):
            code = await self.process.wait()
            with suppress(OSError):
                await self.process.aclose()
        self._lose(self._exit_reason(code))

    def _dispatch(self, message: list[Any]) -> None:
        kind = message[0]
        if kind in ("ok", "error"):
            slot = self._calls.get(message[1])
            if slot is not None:
                cpu, peak, rss = message[3:6]
                self.stats.cpu_seconds += cpu
                self.stats.peak_rss, self.stats.rss = peak, rss
                slot.reply = message
                slot.done.set()
        elif kind == "log":
            _, level, name, text = message
            logger = logging.getLogger(name)
            if logger.isEnabledFor(level):
                logger.handle(logger.makeRecord(name, level, "(worker)", 0, text, (), None))
        elif kind == "opened":
            slot = self._opens.get(message[1])
            if slot is not None:
                slot.reply = message
                slot.done.set()
        elif kind == "ready":
            self._ready.set()
        elif kind == "limit":
            self._over_limit = int(message[1])

    # -- ending ------------------------------------------------------------------------------

    def _exit_reason(self, code: int) -> str:
        who = f"the worker process {self.name!r} (pid {self.pid})"
        if self._over_limit is not None or code == wire.EXIT_MEMORY:
            used = f"{self._over_limit / _MB:.0f} MB, " if self._over_limit else ""
            limit = self.memory_limit or 0
            return f"{who} used {used}more than its memory_limit of {limit / _MB:.0f} MB and ended"
        if self._stopping:
            return f"{who} was stopped: {self._stopping}"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            reason = f"{who} was killed by {name}"
            if -code == signal.SIGKILL:
                reason += " (by the out-of-memory killer, or by hand)"
            return reason
        return f"{who} exited with status {code}"

    def _lose(self, reason: str) -> None:
        """Mark the worker ended and fail every call still waiting for it."""
        if not self.alive:
            return
        self.alive, self.reason, self.stats.pid = False, reason, None
        if not self._stopping or self._in_use or self._over_limit is not None:
            self.stats.losses += 1
        for slot in [*self._calls.values(), *self._opens.values()]:
            slot.lost = reason
            slot.done.set()
        self.instances.clear()
        self._ready.set()
        self._ended.set()
        if not self._stopping:
            log.warning("%s", reason)

    async def stop(self, reason: str, *, graceful: bool = True) -> None:
        """End the worker: asked to exit (if ``graceful``), then SIGTERM, then SIGKILL,
        each after ``kill_grace`` seconds. Shielded: a stop is never left halfway."""
        process = self.process
        if process is None or not self.alive:
            return
        self._stopping = self._stopping or reason
        # Ended in use (a call given up) is a loss; ended because unused or at shutdown not.
        self._in_use = self._in_use or not graceful
        with anyio.CancelScope(shield=True):
            if graceful:
                with suppress(WorkerLost):
                    await self._send(["exit"])
            steps = (None, signal.SIGTERM, signal.SIGKILL)  # None: wait for the exit asked
            for signum in steps if graceful else steps[1:]:
                if signum is not None and process.returncode is None:
                    with suppress(ProcessLookupError):
                        process.send_signal(signum)
                with anyio.move_on_after(self.kill_grace):
                    await self._ended.wait()
                if self._ended.is_set():
                    return


class Workers:
    """The worker processes of one scheduler; use as ``async with Workers() as workers``.

    :param kill_grace: seconds a worker has to exit after being asked to, and again after
        SIGTERM, before SIGKILL.
    """

    def __init__(self, *, kill_grace: float = 2.0) -> None:
        self.kill_grace = kill_grace
        self._workers: dict[str, WorkerProcess] = {}
        self._stats: dict[str, WorkerStats] = {}
        self._limits: dict[str, dict[str, int | None]] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._tg: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Workers:
        self._stack = AsyncExitStack()
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None
        try:
            await self.close()
        finally:
            self._tg = None
        return await self._stack.__aexit__(exc_type, exc, tb)

    async def close(self) -> None:
        """Stop every worker (concurrently; shielded)."""
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for worker in list(self._workers.values()):
                    tg.start_soon(worker.stop, "the hub is stopping")
            self._workers.clear()

    def declare(self, name: str, instance_id: str, memory_limit: int | None) -> None:
        """Record that an instance uses worker ``name`` with ``memory_limit`` (None: none).

        :raises InvalidArgumentError: another instance of the group gives another limit.
        """
        members = self._limits.setdefault(name, {})
        for other, limit in members.items():
            if other != instance_id and limit != memory_limit:
                raise InvalidArgumentError(
                    f"plugin instance {instance_id!r}: worker {name!r} is shared with"
                    f" {other!r}, whose memory_limit is {_size(limit)}, not {_size(memory_limit)};"
                    " instances that share a worker must give it the same memory_limit"
                )
        members[instance_id] = memory_limit
        self._stats.setdefault(name, WorkerStats(name))

    def forget(self, name: str, instance_id: str) -> None:
        """Undo :meth:`declare` (the instance is removed)."""
        members = self._limits.get(name)
        if members is not None:
            members.pop(instance_id, None)
            if not members:
                del self._limits[name]
                self._stats.pop(name, None)

    async def get(self, name: str) -> WorkerProcess:
        """The live worker called ``name``, started if none runs."""
        worker = self._workers.get(name)
        if worker is not None and worker.alive:
            return worker
        if self._tg is None:
            raise WorkerLost("the worker pool is not running (use `async with Workers()`)")
        lock = self._locks.setdefault(name, anyio.Lock())
        async with lock:
            worker = self._workers.get(name)
            if worker is not None and worker.alive:
                return worker
            limits = self._limits.get(name, {})
            limit = next(iter(limits.values()), None)
            stats = self._stats.setdefault(name, WorkerStats(name))
            worker = WorkerProcess(name, stats, limit, self.kill_grace)
            self._workers[name] = worker
            await worker.start(self._tg)
            return worker

    async def release(self, name: str, instance_id: str) -> None:
        """An instance stopped: close its plugin object; a worker left with no instance
        stops."""
        worker = self._workers.get(name)
        if worker is None:
            return
        await worker.close(instance_id)
        if not worker.instances:
            self._workers.pop(name, None)
            await worker.stop("no instance uses it any more")

    def stats(self) -> list[WorkerStats]:
        """Every declared worker's figures, by name."""
        return [self._stats[name] for name in sorted(self._stats)]

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(list(self._workers.values()))


def _size(limit: int | None) -> str:
    return "none" if limit is None else f"{limit / _MB:g} MB"
