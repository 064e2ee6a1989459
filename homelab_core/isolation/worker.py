"""The worker process: ``python -m homelab_core.isolation``, started by the hub.

It runs the plugin objects of one instance, or of one group of instances
(``worker = "name"``), and does what the hub asks over its pipes (:mod:`.wire`): set up,
collect (with ``health()``), tear down. Plugin methods are called as in the hub
(:meth:`homelab_core.runner.Runner.call`: async methods on this process's event loop, sync
ones in its threads), so a plugin cannot tell the difference.

What makes it safe to kill and impossible to orphan:

- Its own protocol pipes are private copies of stdin and stdout; the plugin's ``print()``
  goes to stderr (the hub's), its ``input()`` reads nothing.
- SIGTERM cancels its running calls, whose ``finally`` clauses then run (a plugin's
  clean-up: its child processes killed, its sockets closed), and it exits; a call stuck
  where cancellation cannot reach (a sync method, a blocked event loop) waits for the
  hub's SIGKILL.
- It dies with the hub: on Linux the kernel sends it SIGKILL when the hub goes
  (``PR_SET_PDEATHSIG``), and a thread of its own exits it as soon as its request pipe
  closes, which also covers the hub's ``kill -9`` where there is no such signal.
- With a memory limit, a thread checks its resident memory every 0.1 s, and it is checked
  after every call: over the limit, the worker says so and exits. Its address space is
  capped too (``RLIMIT_AS``, the limit plus 256 MiB over what it had at start), so that
  an allocation far past the limit fails at once instead of swapping.
"""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import logging
import os
import pickle
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from .. import clock
from ..errors import SetupFailed, SetupNotReady
from ..plugin import Plugin
from ..runner import Runner, describe, validate_metrics, validate_report
from . import wire

EXIT_MEMORY, EXIT_PROTOCOL = wire.EXIT_MEMORY, wire.EXIT_PROTOCOL
#: Address space allowed over the memory limit: thread stacks and malloc arenas reserve
#: far more than they use (``MALLOC_ARENA_MAX=2`` is set for workers).
ADDRESS_SPACE_HEADROOM = 256 * 1024 * 1024
#: Seconds between two looks at the resident memory, with a memory limit.
MEMORY_CHECK_PERIOD = 0.1
_PAGE = os.sysconf("SC_PAGE_SIZE")
_STATM = Path("/proc/self/statm")
_STATUS = Path("/proc/self/status")


def resident_bytes() -> int:
    """This process's resident memory, in bytes (``/proc/self/statm``)."""
    try:
        return int(_STATM.read_bytes().split()[1]) * _PAGE
    except OSError:  # not Linux: the peak is the best there is
        return peak_bytes()


def peak_bytes() -> int:
    """The peak resident memory of this process, in bytes: ``VmHWM`` of
    ``/proc/self/status``, which starts afresh with the worker's program. Not
    ``ru_maxrss``, which Linux carries over fork and exec: a worker of a 400 MB hub would
    report 400 MB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds() -> float:
    """CPU seconds this process used so far (user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGKILL when the parent goes; exit now if it already went."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


class _FixedClock:
    """The hub's test clock as it read when it sent a call (see :mod:`homelab_core.clock`)."""

    def __init__(self, wall: float, mono: float) -> None:
        self._wall, self._mono = wall, mono

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono


class _Forward(logging.Handler):
    """Sends every log record to the hub, which logs it under the same logger."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text = f"{text}\n{logging.Formatter().formatException(record.exc_info)}"
            self.worker.send(["log", record.levelno, record.name, text])
        except Exception:  # a log line must never break a call
            self.handleError(record)


class Worker:
    """The worker's state: its plugin objects and its pipe to the hub."""

    def __init__(self, out: BinaryIO, memory_limit: int | None) -> None:
        self._out = out
        self._lock = threading.Lock()
        self.memory_limit = memory_limit
        self.runners: dict[str, Runner] = {}
        self.threads = anyio.CapacityLimiter(16)
        #: Set by SIGTERM: the calls are being cancelled and the worker is exiting.
        self.terminating = False

    def send(self, message: list[Any]) -> None:
        """Write one message to the hub (from any thread)."""
        data = wire.frame(message)
        with self._lock:
            self._out.write(data)
            self._out.flush()

    def over_limit(self) -> None:
        """If the worker holds more memory than its limit, say so and exit."""
        limit = self.memory_limit
        if limit is None:
            return
        rss = resident_bytes()
        if rss > limit:
            self.exit_over_limit(rss)

    def exit_over_limit(self, rss: int) -> None:
        try:
            self.send(["limit", rss])
        finally:
            os._exit(EXIT_MEMORY)

    def open(self, instance_id: str, blob: bytes) -> None:
        """Create the plugin object of an instance from its class and options."""
        plugin_type, config = pickle.loads(blob)
        plugin: Plugin = plugin_type(config, instance_id=instance_id)
        # The hub enforces the timeouts: here a call runs until it returns or the worker
        # is killed.
        self.runners[instance_id] = Runner(instance_id, plugin, float("inf"), threads=self.threads)

    async def call(self, call_id: int, instance_id: str, method: str, stamp: Any) -> None:
        """Run one method of an instance and answer with its result or its error."""
        started = cpu_seconds()
        try:
            # A test clock's readings when the hub has one; the real clock otherwise.
            clock._source = None if stamp is None else _FixedClock(stamp[0], stamp[1])
            result = await self._invoke(instance_id, method)
        except BaseException as exc:  # the plugin's, whatever it is: that run's error
            if self.terminating:
                return  # cancelled by SIGTERM: the hub reports the worker's end instead
            if isinstance(exc, MemoryError) and self.memory_limit is not None:
                self.exit_over_limit(max(resident_bytes(), self.memory_limit + 1))
            self.over_limit()
            self.send(["error", call_id, _error(exc), *self._usage(started)])
            return
        self.over_limit()
        self.send(["ok", call_id, result, *self._usage(started)])

    async def _invoke(self, instance_id: str, method: str) -> Any:
        runner = self.runners[instance_id]
        plugin = runner.plugin
        if method == "collect":
            metrics = validate_metrics(await runner.call(plugin.collect), None)
            report = None
            if type(plugin).health is not Plugin.health:
                report = validate_report(await runner.call(plugin.health))
            return [[wire.metric_row(m) for m in metrics], wire.report_row(report)]
        if method not in ("setup", "teardown"):
            raise ValueError(f"no such plugin method: {method!r}")
        await runner.call(getattr(plugin, method))
        return None

    @staticmethod
    def _usage(started: float) -> tuple[float, int, int]:
        return cpu_seconds() - started, peak_bytes(), resident_bytes()


def _error(exc: BaseException) -> list[Any]:
    original = getattr(exc, "original", exc)  # a sync method's escaped BaseException
    if isinstance(original, SetupFailed):
        return wire.error_row("setup_failed", describe(original))
    if isinstance(original, SetupNotReady):
        return wire.error_row("not_ready", describe(original), original.retry_after)
    return wire.error_row("error", describe(original))


def _read_frame(source: BinaryIO) -> list[Any] | None:
    """The next message from the hub; None at the end of the pipe."""
    header = source.read(wire.HEADER.size)
    if len(header) < wire.HEADER.size:
        return None
    (size,) = wire.HEADER.unpack(header)
    if size > wire.MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = source.read(size)
    if len(body) < size:
        return None
    return wire.parse(body)


def _reader(source: BinaryIO, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
    """Hand every request to the event loop; exit the process when the hub is gone."""
    try:
        while (message := _read_frame(source)) is not None:
            loop.call_soon_threadsafe(queue.put_nowait, message)
    except BaseException:
        os._exit(EXIT_PROTOCOL)
    os._exit(0)  # the hub closed the pipe (it stopped, or it died)


def _watch_memory(worker: Worker) -> None:
    while True:
        time.sleep(MEMORY_CHECK_PERIOD)
        worker.over_limit()


async def _serve(worker: Worker, source: BinaryIO) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    threading.Thread(
        target=_reader, args=(source, loop, queue), name="homelab-worker-reader", daemon=True
    ).start()
    tasks: set[asyncio.Task[None]] = set()

    def terminate() -> None:
        # SIGTERM: cancel the calls, so that the plugins' ``finally`` clauses run (a
        # command plugin kills its child process there), then exit; the hub sends SIGKILL
        # if that takes longer than its grace period.
        worker.terminating = True
        calls = list(tasks)
        for task in calls:
            task.cancel()

        async def finish() -> None:
            await asyncio.gather(*calls, return_exceptions=True)
            os._exit(0)

        ending.append(loop.create_task(finish()))  # held: a task nobody holds may vanish

    ending: list[asyncio.Task[None]] = []

    loop.add_signal_handler(signal.SIGTERM, terminate)
    while True:
        message = await queue.get()
        kind = message[0]
        if kind == "call":
            _, call_id, instance_id, method, stamp = message
            task = loop.create_task(worker.call(call_id, instance_id, method, stamp))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == "open":
            _, instance_id, blob = message
            try:
                worker.open(instance_id, blob)
            except BaseException as exc:
                worker.send(["opened", instance_id, _error(exc)])
            else:
                worker.send(["opened", instance_id, None])
        elif kind == "close":
            worker.runners.pop(message[1], None)
        elif kind == "exit":
            return


def main() -> None:
    """Take over the pipes, read the hub's ``init``, then serve its requests."""
    source = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    quiet = os.open(os.devnull, os.O_RDONLY)
    os.dup2(quiet, 0)
    os.close(quiet)
    os.dup2(2, 1)  # the plugin's print() goes to the hub's stderr, not into the protocol
    faulthandler.enable()  # a crash prints its Python stack to stderr
    init = _read_frame(source)
    if init is None or init[0] != "init":
        os._exit(EXIT_PROTOCOL)
    _, sys_path, parent_pid, memory_limit, level = init
    die_with_parent(parent_pid)
    sys.path[:] = sys_path
    worker = Worker(out, memory_limit)
    root = logging.getLogger()
    root.handlers[:] = [_Forward(worker)]
    root.setLevel(level)
    if memory_limit is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        size = int(_STATM.read_bytes().split()[0]) * _PAGE
        cap = size + memory_limit + ADDRESS_SPACE_HEADROOM
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        threading.Thread(
            target=_watch_memory, args=(worker,), name="homelab-worker-memory", daemon=True
        ).start()
    worker.send(["ready", os.getpid()])
    asyncio.run(_serve(worker, source))
    os._exit(0)
