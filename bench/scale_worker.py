"""One run of the ``scheduler_scale`` benchmark, in a process of its own.

``python bench/scale_worker.py OUT.json --mode bare|hub|loop --instances N --interval S
--jitter J --windows K [--gc-threshold T] [--collect-ms MS] [--db PATH] [--shutdown]``

Schedules ``N`` no-op plugin instances (an async ``collect()`` that returns no metrics) on
homelab_core's :class:`~homelab_core.Scheduler`, either bare with a sink that only records
each execution's lag, or inside a full :class:`~homelab_core.Hub` (SQLite file, cache, bus).
``loop`` is the baseline without homelab_core: a bare anyio loop that starts the same
number of no-op tasks at the same rate (:func:`loop`). Every mode tunes the garbage
collector as a hub tunes it (``[scheduler] gc_threshold``, ``homelab_core.hub.tuned_gc``)
unless ``--gc-threshold 0`` asks for Python's defaults.
It waits until every instance has started and finished its first run, then measures ``K``
windows of one interval each: process CPU time (``time.process_time``, every thread),
scheduled runs, their start lag, skipped ticks and garbage-collector work. Writes JSON,
then ends the process at once unless ``--shutdown`` asks to time stopping the instances.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from homelab_core import (
    ExecutionStatus,
    Hub,
    InstanceSettings,
    Metric,
    Plugin,
    PluginManager,
    RunResult,
    Scheduler,
    Settings,
    hookimpl,
)
from homelab_core.config import SchedulerSettings
from homelab_core.hub import tuned_gc


class Noop(Plugin):
    """Does nothing, as fast as the framework lets it (or waits ``DELAY`` seconds first)."""

    name = "noop"
    default_interval = 10.0
    #: Seconds each collection waits (``--collect-ms``), like a plugin waiting on a target.
    DELAY = 0.0

    async def collect(self) -> list[Metric]:
        if self.DELAY:
            await anyio.sleep(self.DELAY)
        return []


class NoopTypes:
    """Registers :class:`Noop` with a hub's plugin manager."""

    @hookimpl
    def register_plugins(self, register: Callable[[type[Plugin]], None]) -> None:
        register(Noop)


class GcClock:
    """Counts collections per generation and the time they take."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = 0.0
        self.longest = 0.0
        self._start = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            spent = time.perf_counter() - self._start
            self.count[info["generation"]] += 1
            self.seconds += spent
            self.longest = max(self.longest, spent)

    def snapshot(self) -> tuple[list[int], float]:
        self.longest = 0.0
        return list(self.count), self.seconds


class Recorder:
    """What the sink saw: (emitted at, instance id, lag) of each scheduled run, skips."""

    def __init__(self) -> None:
        self.runs: list[tuple[float, str, float]] = []
        self.skipped = 0
        self.first_run: set[str] = set()
        self.counting_first = True

    def started(self, instance_id: str, lag: float) -> None:
        """A run that started ``lag`` seconds after it was due (the ``loop`` baseline)."""
        self.runs.append((time.monotonic(), instance_id, lag))
        if self.counting_first:
            self.first_run.add(instance_id)

    def record(self, result: RunResult) -> None:
        execution = result.execution
        if execution is None or execution.trigger != "schedule":
            return
        if execution.status is ExecutionStatus.SKIPPED:
            self.skipped += 1
            return
        self.runs.append((time.monotonic(), result.instance_id, execution.lag))
        if self.counting_first:
            self.first_run.add(result.instance_id)


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def quantile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * p / 100 + 0.5) - 1))]


async def measure(args: argparse.Namespace, recorder: Recorder, started: float) -> dict[str, Any]:
    """Wait for the first round, then measure ``args.windows`` windows of one interval."""
    ready_at = time.monotonic()
    deadline = ready_at + args.interval + args.jitter + 30
    while len(recorder.first_run) < args.instances:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(recorder.first_run)} of {args.instances} instances ran in time"
            )
        await anyio.sleep(0.05)
    first_round = time.monotonic()
    recorder.counting_first = False
    # Runs come in bunches when the jitter is shorter than the interval: start the windows
    # between two bunches, so that no bunch straddles a window's edge.
    spread = first_round - recorder.runs[0][0]
    await anyio.sleep(max(0.0, (args.interval - spread) / 2))
    clock = GcClock()
    windows = []
    measured_from = len(recorder.runs)
    cpu_start, wall_start = time.process_time(), time.monotonic()
    for _ in range(args.windows):
        gc_count, gc_seconds = clock.snapshot()
        load = loadavg()
        n_runs, n_skipped = len(recorder.runs), recorder.skipped
        t0, c0 = time.monotonic(), time.process_time()
        await anyio.sleep(args.interval)
        t1, c1 = time.monotonic(), time.process_time()
        window = recorder.runs[n_runs:]
        lags = sorted(lag for _, _, lag in window)
        # How bunched are the runs: the share of the window's runs in its busiest second.
        seconds = [0] * (int(args.interval) + 2)
        for at, _, _ in window:
            seconds[min(len(seconds) - 1, max(0, int(at - t0)))] += 1
        windows.append(
            {
                "wall_s": t1 - t0,
                "cpu_s": c1 - c0,
                "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
                "runs": len(window),
                "skipped": recorder.skipped - n_skipped,
                "cpu_us_per_run": 1e6 * (c1 - c0) / len(window) if window else None,
                "lag_p50_ms": 1000 * quantile(lags, 50),
                "lag_p99_ms": 1000 * quantile(lags, 99),
                "lag_max_ms": 1000 * lags[-1] if lags else None,
                "busiest_second_share": max(seconds) / len(window) if window else None,
                "gc_collections": [a - b for a, b in zip(clock.count, gc_count, strict=True)],
                "gc_s": clock.seconds - gc_seconds,
                "gc_longest_ms": 1000 * clock.longest,
                "loadavg_1min": load,
            }
        )
    gc.callbacks.remove(clock)
    cpu_total, wall_total = time.process_time() - cpu_start, time.monotonic() - wall_start
    every_lag = sorted(lag for _, _, lag in recorder.runs[measured_from:])
    return {
        # Over every window together: the tail of all runs, the CPU of the whole time.
        "cpu_pct": 100 * cpu_total / wall_total,
        "lag_p50_ms": 1000 * quantile(every_lag, 50),
        "lag_p99_ms": 1000 * quantile(every_lag, 99),
        "lag_max_ms": 1000 * every_lag[-1] if every_lag else None,
        "runs": len(every_lag),
        "start_s": ready_at - started,
        "first_round_s": first_round - started,
        "first_round_spread_s": spread,
        "rss_mb": rss_mb(),
        "gc_objects": len(gc.get_objects()),
        "windows": windows,
    }


async def bare(args: argparse.Namespace) -> dict[str, Any]:
    recorder = Recorder()

    async def sink(result: RunResult) -> None:
        recorder.record(result)

    settings = SchedulerSettings(
        jitter=args.jitter, concurrency=args.concurrency, gc_threshold=args.gc_threshold
    )
    started = time.monotonic()
    async with Scheduler(settings, sink=sink) as scheduler:
        for i in range(args.instances):
            instance_id = f"noop-{i}"
            scheduler.add(
                instance_id, Noop(Noop.Config(), instance_id=instance_id), interval=args.interval
            )
        # As a hub does once its scheduler has started (0: Python's own collector settings).
        with tuned_gc(settings.gc_threshold):
            found = await measure(args, recorder, started)
        finish(args, found)
        stopping = time.monotonic()
    found["shutdown_s"] = time.monotonic() - stopping
    return found


async def loop(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline: a bare anyio loop doing what the scheduler's timer does, and no more.

    ``N`` "instances" are due every ``interval`` seconds, the first time after a random
    jitter of up to ``min(jitter, interval)`` as the scheduler draws it; one timer task
    keeps a heap of due times and, for each due one, starts a task in a task group that
    records its start lag and returns (with ``--collect-ms``, sleeps that long first). No
    timeout, no concurrency limit, no execution record, no sink: what is left of the
    scheduler's work once everything it adds is taken away.
    """
    recorder = Recorder()
    delay = args.collect_ms / 1000

    async def noop(instance_id: str, due: float) -> None:
        recorder.started(instance_id, anyio.current_time() - due)
        if delay:
            await anyio.sleep(delay)

    async def timer(group: anyio.abc.TaskGroup) -> None:
        now = anyio.current_time()
        spread = min(args.jitter, args.interval)
        heap = [(now + random.uniform(0, spread), i) for i in range(args.instances)]
        heapq.heapify(heap)
        names = [f"noop-{i}" for i in range(args.instances)]
        while True:
            due, index = heap[0]
            now = anyio.current_time()
            if due > now:
                await anyio.sleep(due - now)
                continue
            heapq.heapreplace(heap, (due + args.interval, index))
            group.start_soon(noop, names[index], due, name=names[index])

    started = time.monotonic()
    async with anyio.create_task_group() as group:
        group.start_soon(timer, group)
        with tuned_gc(args.gc_threshold):
            found = await measure(args, recorder, started)
        finish(args, found)
        stopping = time.monotonic()
        group.cancel_scope.cancel()
    found["shutdown_s"] = time.monotonic() - stopping
    return found


def finish(args: argparse.Namespace, found: dict[str, Any]) -> None:
    """Write the figures; unless asked to time the shutdown, end the process at once."""
    found.update(
        mode=args.mode,
        instances=args.instances,
        interval=args.interval,
        jitter=args.jitter,
        concurrency=args.concurrency,
        gc_threshold=args.gc_threshold,
        collect_ms=args.collect_ms,
        pid=os.getpid(),
    )
    args.out.write_text(json.dumps(found))
    if not args.shutdown:
        sys.stdout.flush()
        os._exit(0)


async def hub(args: argparse.Namespace) -> dict[str, Any]:
    recorder = Recorder()
    settings = Settings(
        scheduler=SchedulerSettings(
            jitter=args.jitter, concurrency=args.concurrency, gc_threshold=args.gc_threshold
        ),
        plugins={
            f"noop-{i}": InstanceSettings(id=f"noop-{i}", type="noop", interval=args.interval)
            for i in range(args.instances)
        },
    )
    settings.database.url = f"sqlite://{args.db}"
    manager = PluginManager(load_entry_points=False)
    manager.register(NoopTypes(), name="bench-noop")
    started = time.monotonic()
    async with Hub(settings, plugin_manager=manager) as the_hub:
        on_result = the_hub.scheduler._sink
        assert on_result is not None

        async def sink(result: RunResult) -> None:
            recorder.record(result)
            await on_result(result)

        # The hub's own sink, with the lag recorded on the way (the hub has no lag hook).
        the_hub.scheduler._sink = sink
        found = await measure(args, recorder, started)
        found["samples_written"] = the_hub.store.samples_written
        found["queue_depth"] = the_hub.queue.pending_samples
        found["executions_dropped"] = the_hub.queue.dropped_executions
        finish(args, found)
        stopping = time.monotonic()
    found["shutdown_s"] = time.monotonic() - stopping
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--mode", choices=("bare", "hub", "loop"), default="bare")
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--jitter", type=float, default=SchedulerSettings().jitter)
    parser.add_argument("--concurrency", type=int, default=SchedulerSettings().concurrency)
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=SchedulerSettings().gc_threshold,
        help="[scheduler] gc_threshold, applied as a hub applies it; 0: Python's collector",
    )
    parser.add_argument("--collect-ms", type=float, default=0.0, help="each collect() waits")
    parser.add_argument("--db", type=Path, default=Path("scale.db"))
    parser.add_argument("--shutdown", action="store_true", help="also time stopping everything")
    args = parser.parse_args()
    Noop.DELAY = args.collect_ms / 1000
    found = anyio.run({"bare": bare, "hub": hub, "loop": loop}[args.mode], args)
    args.out.write_text(json.dumps(found))


if __name__ == "__main__":
    main()
