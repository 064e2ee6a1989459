"""``pipeline``: the highest offered load a whole hub holds, against the store's raw write rate.

A :class:`Hub` on a SQLite file runs 2,000 instances of an async plugin that returns 50 new
metrics per collection. Everything a collection goes through runs: validation, the cache,
the bus, the write queue, the batched writer, the execution log. The offered load is
2,000 x 50 / interval samples/s; steps change the interval, so the series (100,000) and
the shape of the work stay the same and only the rate changes. The hub starts at the
lowest load (:data:`MIN_LOAD`), with starts spread over its whole interval (``jitter``
equal to it) so that the load is even, and the start's own backlog is written before the
first step.

Machines of the same kind differ (one held 100,000 samples/s, another stored 54,000/s and
dropped the rest), so the throughput target is a ratio to a baseline measured in the same
run and process:

- **Raw store write rate** (:class:`RawWrites`): :meth:`Store.write` of pre-built batches
  (the batch writer's batch size, collections of the plugin's shape over the same 100,000
  series) in a loop on a SQLite file of its own; only the writes are timed. Measured
  before the hub starts and again after it stops; the figure is the median round. This is
  what the store alone takes in.
- **Step search** (:func:`search`): one hub serves every step. A step sets the interval,
  warms up, measures a window (whole intervals), waits :data:`GRACE` seconds and checks
  that it held the load: no sample dropped by the write queue in the window, every sample
  the plugins made in the window in the database by then, no failed or skipped run, the
  runs the schedule asks for, and a start lag p99 under :data:`LAG_P99_MS`. A step whose
  queue drops in its window is given up at once and its backlog abandoned (a hub past its
  limit would take minutes to write it); the next step abandons what is left of it after
  its warm-up. The first step offers :data:`START_SHARE` of the raw rate; the search goes
  up by :data:`STEP_FACTOR` while steps hold and down while they fail, then bisects
  between the highest load held and the lowest failed until they are within
  :data:`RESOLUTION` of each other or the plan's steps are spent.

Results:

- ``pipeline.held``: the highest offered load held (below every load that failed), in
  samples/s (all of it stored: its step's ``stored_per_s`` is in the details), against the
  raw store write rate. Target ratio >= :data:`HELD_RATIO`. On this machine (2 vCPUs,
  shared with another engineer's PostgreSQL and tests, load average about 2) the raw rate
  was 210,000-400,000 samples/s a round (medians 260,000-360,000), and the hub held
  35,000-60,000 (the next step up failed on lag p99 or collapsed): 0.13-0.19 over five
  runs, full and quick. The limit is the event loop, not the store: at those loads the
  hub's process used 60-97 % of a core making, validating, caching and publishing metrics
  and running the scheduler, and past it the writer collapses rather than slows (stored
  8,000/s at 60,000 offered; most likely its round trips to SQLite's thread wait behind a
  loop that is always late, not profiled), so the search sees a cliff. The target, 0.1,
  leaves room for this machine's noise (the held load moved by 70 % between runs) and
  still fails if a collection costs half as much again, or if the writer falls behind
  well before the loop does.
- ``pipeline.lag_p99``: start lag (scheduled tick to run start) p99 of the held step's
  window, against :data:`LAG_P99_MS` (part of what "held" means, reported on its own).
- ``pipeline.loss``: samples of the held step's window that were dropped or not stored
  within the grace, plus samples of the whole run that are not in the database once the
  hub has stopped and were neither dropped nor abandoned by a failed step.

Each step's figures are in the details of ``pipeline.held``. The hub's maintenance (rollups
and, later, compaction) is pushed out of every window (:data:`MAINTENANCE_INTERVAL`), so the
windows measure ingest alone. The hub's table grows from step to step (a couple of million
rows in a full run); a table of many millions ingests more slowly today
(docs/performance.md, "Trade-offs").
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from homelab_core import Hub, Metric
from homelab_core.config import InstanceSettings, SchedulerSettings, Settings, StoreSettings
from homelab_core.hub import tuned_gc
from homelab_core.store import Store

from . import plugins
from .common import (
    Result,
    cpu_seconds,
    log,
    median,
    percentile,
    ratio_target,
    result,
    value_target,
    workdir,
)

INSTANCES = 2_000
METRICS = 50
#: Seconds after the window that its samples may take to reach the database.
GRACE = 2.0
#: A step holds only if the start lag p99 of its window is under this.
LAG_P99_MS = 100.0
#: Seconds between the hub's maintenance passes: far beyond any step.
MAINTENANCE_INTERVAL = 3600.0
#: Share of the raw store write rate offered by the first step.
START_SHARE = 0.15
#: Factor between steps while the search goes up (or down).
STEP_FACTOR = 1.5
#: The search stops once the highest load held and the lowest failed are this close.
RESOLUTION = 1.1
#: Offered loads are multiples of this many samples/s.
GRAIN = 5_000
#: Lowest and highest load a step offers (intervals of 5 s and 0.1 s).
MIN_LOAD = 20_000
MAX_LOAD = 1_000_000
#: Target: held / raw store write rate.
HELD_RATIO = 0.1
#: A step must see at least this share of the runs its schedule asks for in the window.
RUNS_SHARE = 0.98


@dataclass(frozen=True)
class Plan:
    """How long each part of the benchmark runs."""

    raw_seconds: float
    warmup: float
    window: float
    steps: int


PLANS = {
    True: Plan(raw_seconds=1.0, warmup=2.0, window=4.0, steps=3),
    False: Plan(raw_seconds=3.0, warmup=5.0, window=15.0, steps=7),
}


# -- counting stored samples -------------------------------------------------------------


async def stored_between(store: Store, since: float, until: float) -> int:
    """Samples in the store whose timestamp is in ``[since, until)`` (in the head or in
    chunks, wherever the hub's maintenance has moved them)."""
    return await store.count_samples(since, until)


# -- the baseline: the store's raw write rate ----------------------------------------------


def collection(instance: int, ts: float, value: float) -> tuple[str, list[Metric]]:
    """One collection of instance ``instance``, shaped as the benchmark plugin's."""
    return (
        f"burst{instance}",
        [
            Metric(f"value.{n % 10}", value, labels={"n": str(n)}, timestamp=ts)
            for n in range(METRICS)
        ],
    )


class RawWrites:
    """The baseline: :meth:`Store.write` alone, of pre-built batches, on a file of its own.

    A round is one collection of each of the :data:`INSTANCES` instances (the same series
    as the hub's, made by an untimed first round), written in batches of the batch
    writer's size; each round has newer timestamps. Only the writes are timed, with the
    garbage collector tuned as a hub tunes it; building a round's metrics is not timed.
    Rounds are taken before the search and again after it, so that the baseline sees the
    machine at both ends of the steps; its figure is the median round.
    """

    def __init__(self, directory: Path) -> None:
        self.store = Store(f"sqlite://{directory / 'raw.db'}")
        self.per_batch = max(1, StoreSettings().batch_size // METRICS)
        self.rounds = 0
        self.rates: list[float] = []

    async def open(self) -> None:
        """Open the store and make every series (an untimed round)."""
        await self.store.open()
        await self._round()

    async def close(self) -> None:
        await self.store.close()

    async def _round(self) -> float:
        self.rounds += 1
        ts = 1_700_000_000.0 + self.rounds
        data = [collection(i, ts, float(self.rounds)) for i in range(INSTANCES)]
        batches = [data[s : s + self.per_batch] for s in range(0, INSTANCES, self.per_batch)]
        with tuned_gc(SchedulerSettings().gc_threshold):
            began = time.perf_counter()
            count = 0
            for batch in batches:
                count += await self.store.write(batch)
            return count / (time.perf_counter() - began)

    async def measure(self, seconds: float) -> float:
        """Timed rounds for about ``seconds`` seconds (at least one); their median rate."""
        rates: list[float] = []
        began = time.perf_counter()
        while not rates or time.perf_counter() - began < seconds:
            rates.append(await self._round())
        self.rates += rates
        return median(rates)

    def figures(self) -> dict[str, Any]:
        return {
            "samples_per_s": median(self.rates),
            "samples_per_round": INSTANCES * METRICS,
            "batch_samples": self.per_batch * METRICS,
            "round_rates": [round(r) for r in self.rates],
        }


# -- one step: a hub at one offered load -------------------------------------------------


def interval_for(load: int) -> float:
    """The interval at which :data:`INSTANCES` x :data:`METRICS` offer ``load`` samples/s."""
    return INSTANCES * METRICS / load


def settings_for(directory: Path, load: int) -> Settings:
    """A hub offering ``load`` samples/s on a fresh SQLite file, without maintenance."""
    interval = interval_for(load)
    configured = {
        f"burst{i}": InstanceSettings(
            id=f"burst{i}", type="bench_burst", interval=interval, options={"metrics": METRICS}
        )
        for i in range(INSTANCES)
    }
    settings = Settings(plugins=configured)
    settings.database.url = f"sqlite://{directory / 'pipeline.db'}"
    settings.retention.maintenance_interval = MAINTENANCE_INTERVAL
    # Starts spread over the whole interval: the load is even, whatever the interval.
    settings.scheduler.jitter = interval
    return settings


def runs_so_far(hub: Hub) -> int:
    """Collections made so far by every instance (no await: a consistent snapshot)."""
    return sum(
        hub.scheduler.plugin(i).runs  # type: ignore[attr-defined]
        for i in hub.scheduler.ids()
    )


async def watch_backlog(
    hub: Hub, every: float, seen: list[int], dropped0: int, given_up: anyio.Event
) -> None:
    """Record the write queue's pending samples every ``every`` seconds until cancelled;
    set ``given_up`` as soon as the queue drops a sample beyond the ``dropped0`` it had
    dropped before (the step cannot hold)."""
    while True:
        seen.append(hub.queue.pending_samples)
        if hub.queue.dropped_samples > dropped0:
            given_up.set()
        await anyio.sleep(every)


def window_for(plan: Plan, interval: float) -> float:
    """The plan's window rounded to whole intervals, so each instance runs as often."""
    return max(1, round(plan.window / interval)) * interval


def abandon(hub: Hub) -> int:
    """Empty the write queue without writing it; the samples it held.

    Only for a step that has already failed: a hub that cannot keep up would otherwise
    spend a minute or more writing its backlog at shutdown.
    """
    abandoned = 0
    while len(hub.queue):
        abandoned += hub.queue.take().sample_count
    return abandoned


def set_interval(hub: Hub, interval: float) -> None:
    """Make every instance of ``hub`` run every ``interval`` seconds from its next tick.

    A benchmark-only knob on the scheduler's own records (the scheduler has no public way
    to change a running instance's interval): one hub serves every step, since starting
    2,000 instances takes seconds of a busy loop.
    """
    for unit in hub.scheduler._units.values():
        unit.interval = interval


async def step(hub: Hub, load: int, plan: Plan, settle: float, recover: bool) -> dict[str, Any]:
    """Offer ``load`` samples/s on the running ``hub`` and measure one window; its figures.

    The warm-up is the plan's plus ``settle`` seconds (the previous interval: the new one
    takes effect at each instance's next tick). With ``recover`` (the previous step
    failed), the backlog left at the end of the warm-up is abandoned, so that the window
    starts from an empty queue; drops before the window do not count. A step whose write
    queue drops a sample in its window has failed: it ends at once, its backlog abandoned
    (see :func:`abandon`), without the counts that only a held step needs.
    """
    interval = interval_for(load)
    set_interval(hub, interval)
    await anyio.sleep(plan.warmup + settle)
    abandoned_at_start = abandon(hub) if recover else 0
    dropped0 = hub.queue.dropped_samples
    backlog: list[int] = []
    given_up = anyio.Event()
    in_window, not_ok, abandoned = -1, -1, 0
    lags: list[float] = []
    async with anyio.create_task_group() as watchers:
        # Collections stamp their metrics with time.time() right after counting the run,
        # with no await between: the snapshots split them exactly at t0 and t1.
        runs0, t0, cpu0 = runs_so_far(hub), time.time(), cpu_seconds(os.getpid())
        watchers.start_soon(watch_backlog, hub, 0.1, backlog, dropped0, given_up)
        with anyio.move_on_after(0 if given_up.is_set() else window_for(plan, interval)):
            await given_up.wait()
        runs1, t1, cpu1 = runs_so_far(hub), time.time(), cpu_seconds(os.getpid())
        watchers.cancel_scope.cancel()
    backlog_at_end = hub.queue.pending_samples
    if given_up.is_set():
        abandoned = abandon(hub)
    else:
        await anyio.sleep(GRACE)
        in_window = await stored_between(hub.store, t0, t1)
        lags = [
            r["lag"] * 1000
            for r in await hub.store.fetch(
                "SELECT lag FROM homelab_execution"
                " WHERE started_at >= ? AND started_at < ? AND status = 'ok'",
                [t0, t1],
            )
        ]
        [row] = await hub.store.fetch(
            "SELECT COUNT(*) AS n FROM homelab_execution"
            " WHERE started_at >= ? AND started_at < ? AND status != 'ok'",
            [t0, t1],
        )
        not_ok = int(row["n"])
    dropped = hub.queue.dropped_samples - dropped0
    window = t1 - t0
    runs = runs1 - runs0
    expected_runs = INSTANCES * window / interval
    lag_p99 = percentile(lags, 99)
    missing = runs * METRICS - in_window if in_window >= 0 else None
    figures: dict[str, Any] = {
        "offered_per_s": load,
        "interval_s": interval,
        "window_s": window,
        "made_in_window": runs * METRICS,
        "stored_in_window": in_window,
        "stored_per_s": in_window / window if in_window >= 0 else math.nan,
        "missing_in_window": missing,
        "runs_in_window": runs,
        "runs_expected": round(expected_runs),
        "not_ok_runs_in_window": not_ok,
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": lag_p99,
        "backlog_max": max(backlog, default=0),
        "backlog_at_end": backlog_at_end,
        "dropped": dropped,
        "abandoned": abandoned,
        "abandoned_at_start": abandoned_at_start,
        "cpu_percent": (cpu1 - cpu0) / window * 100,
        "loadavg_1min": os.getloadavg()[0],
    }
    reasons = []
    if given_up.is_set():
        reasons.append(f"given up after {window:.1f} s of the window, backlog abandoned")
    if dropped:
        reasons.append(f"{dropped} dropped")
    if missing:
        reasons.append(f"{missing} of the window not stored in {GRACE:g} s")
    if not_ok > 0:
        reasons.append(f"{not_ok} runs not ok")
    if runs < RUNS_SHARE * expected_runs:
        reasons.append(f"{runs} runs of {expected_runs:.0f}")
    if not lag_p99 < LAG_P99_MS:
        reasons.append(f"lag p99 {lag_p99:.0f} ms")
    figures["held"] = not reasons
    figures["why_not"] = "; ".join(reasons)
    return figures


# -- the search ----------------------------------------------------------------------------


def level(samples_per_s: float) -> int:
    """``samples_per_s`` rounded to a multiple of :data:`GRAIN`, within the bounds."""
    return max(MIN_LOAD, min(MAX_LOAD, round(samples_per_s / GRAIN) * GRAIN))


def bounds(steps: Sequence[dict[str, Any]]) -> tuple[int | None, int | None]:
    """The highest load held below every load that failed, and the lowest load that failed
    (None: no such step)."""
    failed = min((s["offered_per_s"] for s in steps if not s["held"]), default=None)
    held = max(
        (
            s["offered_per_s"]
            for s in steps
            if s["held"] and (failed is None or s["offered_per_s"] < failed)
        ),
        default=None,
    )
    return held, failed


def next_load(steps: Sequence[dict[str, Any]]) -> int | None:
    """The next step's load: up or down by :data:`STEP_FACTOR` until a held load and a
    failed one are known, then halfway (geometrically) between them; None once they are
    within :data:`RESOLUTION` (or a bound is reached)."""
    held, failed = bounds(steps)
    last = steps[-1]["offered_per_s"]
    if held is None:
        candidate = level(last / STEP_FACTOR)
    elif failed is None:
        candidate = level(last * STEP_FACTOR)
    elif failed / held <= RESOLUTION:
        return None
    else:
        candidate = level(math.sqrt(held * failed))
    tried = {s["offered_per_s"] for s in steps}
    return None if candidate in tried else candidate


async def search(directory: Path, plan: Plan) -> dict[str, Any]:
    """The baseline, then steps from :data:`START_SHARE` of it towards the highest load held.

    One hub serves every step (its table grows from step to step). The baseline is
    measured before the hub starts and again once it has stopped (never while it runs: it
    would share the hub's event loop); its figure is the median of all its rounds.
    """
    raw = RawWrites(directory)
    await raw.open()
    try:
        first = await raw.measure(plan.raw_seconds)
        log(f"raw store write rate {first:,.0f} samples/s")
        steps: list[dict[str, Any]] = []
        load: int | None = level(first * START_SHARE)
        assert load is not None
        began = time.perf_counter()
        # The hub starts at the lowest load: starting 2,000 instances keeps the loop busy
        # for seconds, and a backlog made then would be charged to the first step.
        async with Hub(settings_for(directory, MIN_LOAD), plugin_manager=plugins.manager()) as hub:
            start_s = time.perf_counter() - began
            log(f"hub started with {INSTANCES} instances in {start_s:.1f} s")
            while load is not None and len(steps) < plan.steps:
                settle = steps[-1]["interval_s"] if steps else interval_for(MIN_LOAD)
                recover = bool(steps) and not steps[-1]["held"]
                figures = await step(hub, load, plan, settle, recover)
                steps.append(figures)
                verdict = "held" if figures["held"] else f"not held ({figures['why_not']})"
                log(
                    f"step {len(steps)}: offered {load:,}/s"
                    f" (interval {figures['interval_s']:.3f} s),"
                    f" stored {figures['stored_per_s']:,.0f}/s,"
                    f" lag p99 {figures['lag_p99_ms']:.1f} ms,"
                    f" backlog max {figures['backlog_max']:,},"
                    f" CPU {figures['cpu_percent']:.0f} %: {verdict}"
                )
                load = next_load(steps)
            produced = runs_so_far(hub) * METRICS
        store = hub.store
        await store.open()
        try:
            stored_total = await store.count_samples()
        finally:
            await store.close()
        last = await raw.measure(plan.raw_seconds)
        log(f"raw store write rate after the steps {last:,.0f} samples/s")
        abandoned = sum(s["abandoned"] + s["abandoned_at_start"] for s in steps)
        dropped = hub.queue.dropped_samples
        return {
            "raw": raw.figures(),
            "steps": steps,
            "hub_start_s": start_s,
            "produced": produced,
            "stored_total": stored_total,
            "dropped_total": dropped,
            "abandoned_total": abandoned,
            # Neither stored nor counted as dropped or abandoned by a failed step: lost.
            "unaccounted": produced - stored_total - dropped - abandoned,
        }
    finally:
        await raw.close()


def rounded_step(figures: dict[str, Any]) -> dict[str, Any]:
    """``figures`` with floats to three decimals (for details)."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def run(quick: bool) -> list[Result]:
    plan = PLANS[quick]
    began = time.perf_counter()
    with workdir("pipeline") as directory:
        found = asyncio.run(search(directory, plan))
    raw, steps = found["raw"], found["steps"]
    held, failed = bounds(steps)
    top = next((s for s in steps if s["offered_per_s"] == held), None)
    details = {
        "instances": INSTANCES,
        "metrics_per_collection": METRICS,
        "warmup_s": plan.warmup,
        "window_s": plan.window,
        "grace_s": GRACE,
        "raw_store_write": rounded_step(raw),
        "held_offered_per_s": held or 0,
        "held_stored_per_s": round(top["stored_per_s"], 1) if top else None,
        "lowest_failed_offered_per_s": failed,
        "steps": [rounded_step(s) for s in steps],
        **{
            k: round(v, 2) if isinstance(v, float) else v
            for k, v in found.items()
            if k not in ("raw", "steps")
        },
        "benchmark_s": round(time.perf_counter() - began, 1),
    }
    log(
        f"held {held or 0:,} samples/s offered (lowest failed: {failed});"
        f" raw {raw['samples_per_s']:,.0f}/s"
    )
    loss = math.nan
    if top is not None:
        loss = top["dropped"] + top["missing_in_window"] + found["unaccounted"]
    return [
        result(
            "pipeline.held",
            float(held or 0),
            "samples/s",
            ratio_target(">=", HELD_RATIO),
            baseline=raw["samples_per_s"],
            baseline_name="raw Store.write",
            details=details,
        ),
        result(
            "pipeline.lag_p99",
            top["lag_p99_ms"] if top else math.nan,
            "ms",
            value_target("<", LAG_P99_MS, "ms"),
            details={
                "at_offered_per_s": held,
                "lag_p50_ms": round(top["lag_p50_ms"], 3) if top else None,
            },
        ),
        result(
            "pipeline.loss",
            loss,
            "samples",
            value_target("==", 0),
            details={
                "at_offered_per_s": held,
                "dropped_in_held_step": top["dropped"] if top else None,
                "missing_in_held_window": top["missing_in_window"] if top else None,
                "unaccounted_in_run": found["unaccounted"],
            },
        ),
    ]
