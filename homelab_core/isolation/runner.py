"""The runner of an isolated instance: the same calls as in process, made in a worker.

:class:`ProcessRunner` is a :class:`~homelab_core.runner.Runner` whose plugin methods run
in a worker process (:mod:`.pool`); timeouts, errors, stamping and execution records stay
the base class's, so the scheduler cannot tell the two apart. What differs:

- a call given up (its timeout, or the instance stopping) ends the worker: SIGTERM, then
  SIGKILL; nothing is left running, so nothing is ever abandoned in a thread;
- a worker that ends during a call (a crash, a signal, ``os._exit``, its memory limit) is
  that call's error, with the exit status or the signal;
- the next run after a worker ended starts a fresh one and sets the instance up in it
  before collecting: a plugin object lives exactly as long as its worker;
- each execution records the worker's CPU time for the run and its peak memory.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from .. import clock
from ..errors import InvalidArgumentError
from ..model import Execution, HealthReport, InstanceState, Metric
from ..plugin import Plugin
from ..runner import TEARDOWN_TIMEOUT, Outcome, Runner, describe
from . import wire
from .pool import WorkerLost, WorkerProcess, Workers


def portable(plugin: Plugin) -> bytes:
    """The plugin's class and options, pickled for a worker to rebuild the plugin object.

    :raises InvalidArgumentError: a worker could not import the class (defined in the
        ``__main__`` script or in a function) or the options cannot be pickled.
    """
    cls = type(plugin)
    where = f"plugin type {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__})"
    if cls.__module__ == "__main__":
        raise InvalidArgumentError(
            f"{where} cannot run in a worker process: it is defined in the script being"
            " run, which a worker cannot import; move it into a module"
        )
    try:
        blob = pickle.dumps((cls, plugin.config))
        same = pickle.loads(blob)[0] is cls
    except Exception as exc:
        raise InvalidArgumentError(
            f"{where} cannot run in a worker process: its class or its options cannot be"
            f" sent to one ({describe(exc)})"
        ) from exc
    if not same:
        raise InvalidArgumentError(
            f"{where} cannot run in a worker process: importing {cls.__module__} gives"
            " another class of that name"
        )
    return blob


class ProcessRunner(Runner):
    """Calls an instance's plugin methods in a worker process.

    :param workers: the pool of worker processes.
    :param worker: the name of the worker it shares with other instances; None: a worker
        of its own (named after the instance).
    :param memory_limit: bytes of resident memory its worker may hold (None: no limit).
    """

    def __init__(
        self,
        instance_id: str,
        plugin: Plugin,
        timeout: float,
        *,
        workers: Workers,
        worker: str | None = None,
        memory_limit: int | None = None,
        teardown_timeout: float = TEARDOWN_TIMEOUT,
    ) -> None:
        super().__init__(instance_id, plugin, timeout, teardown_timeout=teardown_timeout)
        self.workers = workers
        self.worker_name = worker or instance_id
        self.memory_limit = memory_limit
        self._blob = portable(plugin)
        workers.declare(self.worker_name, instance_id, memory_limit)
        #: The worker in which the plugin object is open, and whether it was set up there.
        self._worker: WorkerProcess | None = None
        self._set_up = False
        self._report: HealthReport | None = None
        self._cpu: float | None = None
        self._peak: int | None = None

    def forget(self) -> None:
        """The instance is removed: its worker no longer counts it as a member."""
        self.workers.forget(self.worker_name, self.instance_id)

    async def attempt(self, method: Callable[[], Any], **kwargs: Any) -> Outcome:
        """The base class's attempt, with the worker's CPU time and peak memory added."""
        self._cpu = self._peak = None
        outcome = await super().attempt(method, **kwargs)
        if self._cpu is not None:
            execution = attrs.evolve(outcome.execution, cpu=self._cpu, peak_rss=self._peak)
            outcome = outcome._replace(execution=execution)
        return outcome

    async def setup(self, trigger: str = "setup") -> tuple[InstanceState, Outcome]:
        """One setup attempt, as in process; starting the worker and creating the plugin
        object there come first, outside the attempt's timeout (a worker takes a moment to
        start, more on a busy machine, which must not count against the plugin)."""
        failure = await self._prepare()
        if failure is None:
            return await super().setup(trigger)
        outcome = await self.attempt(_raiser(failure), trigger=trigger, what="setup")
        return InstanceState.SETUP_RETRY, outcome

    async def collect(
        self, trigger: str, scheduled: float | None = None
    ) -> tuple[Execution, list[Metric], HealthReport | None]:
        """One collection, as in process; after the worker ended, a fresh one is started
        first (outside the run's timeout) and the instance set up there (inside it)."""
        worker = self._worker
        if worker is None or not worker.alive:
            failure = await self._prepare()
            if failure is not None:
                outcome = await self.attempt(_raiser(failure), trigger=trigger)
                return outcome.execution, [], None
        return await super().collect(trigger, scheduled)

    async def _prepare(self) -> BaseException | None:
        """Start the worker if none runs and create the plugin object in it; the error
        if either failed."""
        try:
            worker = await self.workers.get(self.worker_name)
            if self._worker is not worker or self.instance_id not in worker.instances:
                self._worker, self._set_up = None, False
                error = await worker.open(self.instance_id, self._blob)
                if error is not None:
                    return wire.error_of(error)
                self._worker = worker
        except WorkerLost as exc:
            return exc
        return None

    async def call(self, method: Callable[[], Any]) -> Any:
        """Make the call in the worker: ``setup``, ``collect``, ``health`` (answered by the
        collect before it, which runs ``health()`` in the same round trip) or ``teardown``."""
        if getattr(method, "__self__", None) is not self.plugin:
            return await super().call(method)  # not the plugin's: the hub's own code
        name = getattr(method, "__name__", "")
        if name == "collect":
            return await self._collect()
        if name == "health":
            report, self._report = self._report, None
            return report
        if name == "setup":
            return await self._setup(method)
        if name == "teardown":
            return await self._teardown(method)
        raise ValueError(f"{name}() cannot be called in a worker process")

    async def _setup(self, method: Callable[[], Any]) -> None:
        worker = self._worker
        if worker is None or not worker.alive:
            failure = await self._prepare()
            if failure is not None:
                raise failure
            worker = self._worker
            assert worker is not None
        if getattr(method, "__func__", None) is not Plugin.setup:
            await self._remote(worker, "setup")
        self._set_up = True

    async def _collect(self) -> list[Any]:
        stamp = clock.wall()
        worker = self._worker
        if worker is None or not worker.alive or not self._set_up:
            # The worker ended since the instance was set up: set it up in a fresh one.
            try:
                await self._setup(self.plugin.setup)
            except WorkerLost:
                raise
            except Exception as exc:
                raise wire.RemoteError(
                    f"setup() in a new worker process failed: {describe(exc)}"
                ) from exc
            worker = self._worker
            assert worker is not None
        rows, report = await self._remote(worker, "collect")
        self._report = wire.report_of(report)
        return [wire.metric_of(row, stamp) for row in rows]

    async def _teardown(self, method: Callable[[], Any]) -> None:
        worker, set_up = self._worker, self._set_up
        self._set_up = False
        if (
            worker is not None
            and worker.alive
            and set_up
            and getattr(method, "__func__", None) is not Plugin.teardown
        ):
            await self._remote(worker, "teardown")

    async def _remote(self, worker: WorkerProcess, method: str) -> Any:
        try:
            reply = await worker.call(self.instance_id, method)
        except anyio.get_cancelled_exc_class():
            # The call was given up: only ending the worker stops the plugin's code.
            await worker.stop(
                f"{method}() of {self.instance_id!r} was given up (it timed out, or the"
                " instance stopped)",
                graceful=False,
            )
            raise
        cpu, peak = reply[3], reply[4]
        self._cpu = cpu if self._cpu is None else self._cpu + cpu
        self._peak = peak
        if reply[0] == "error":
            raise wire.error_of(reply[2])
        return reply[2]

    async def close(self) -> None:
        """The instance stopped: drop its plugin object; a worker left with no instance
        stops."""
        self._worker, self._set_up = None, False
        with anyio.CancelScope(shield=True):
            await self.workers.release(self.worker_name, self.instance_id)


def _raiser(error: BaseException) -> Callable[[], Any]:
    """A method that raises ``error``: an attempt of it records the error as any other."""

    async def fail() -> Any:
        raise error

    return fail
