"""``isolation``: what running a plugin in a worker process costs.

- ``isolation.overhead``: a no-op ``collect()`` returning 50 metrics, called through the
  instance's runner as the scheduler calls it (timeout, validation, execution record), in
  process (``Runner``) and in a worker (``ProcessRunner``) in the same run: blocks of runs
  of each alternate, so that both see the same machine. The figure is the median added
  latency per run (target < 2 ms); details hold the p99s and the CPU per run of each (the
  hub's plus, isolated, the worker's), whose ratio is reported.
- ``isolation.memory``: the resident memory of one idle worker (set up, a few runs, then
  left alone for a second; target < 30 MB), and of one group worker holding 20 instances
  (``isolation.memory_group``, against the same worker holding one: at most 1.5 times),
  with the increment per instance.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio

from homelab_core.isolation.pool import Workers
from homelab_core.isolation.runner import ProcessRunner
from homelab_core.runner import Runner

from .common import (
    Result,
    cpu_seconds,
    log,
    median,
    percentile,
    ratio_target,
    result,
    rss_bytes,
    value_target,
)
from .isolation_plugin import FiftyMetrics

MB = 1024 * 1024
TIMEOUT = 10.0


def plugin(instance_id: str) -> FiftyMetrics:
    return FiftyMetrics(FiftyMetrics.Config(), instance_id=instance_id)


async def timed_runs(runner: Runner, count: int) -> tuple[list[float], float]:
    """``count`` runs: the seconds of each, and the hub's CPU seconds for all of them."""
    times = []
    cpu = time.process_time()
    for _ in range(count):
        started = time.perf_counter()
        execution, metrics, _ = await runner.collect("manual")
        times.append(time.perf_counter() - started)
        assert execution.status.value == "ok" and len(metrics) == 50, execution
    return times, time.process_time() - cpu


def worker_pid(workers: Workers, name: str) -> int:
    (pid,) = [w.pid for w in workers.stats() if w.name == name]
    assert pid is not None
    return pid


async def overhead(quick: bool) -> Result:
    blocks, per_block = (6, 100) if quick else (20, 100)
    async with Workers() as workers:
        local = Runner("local", plugin("local"), TIMEOUT)
        isolated = ProcessRunner("isolated", plugin("isolated"), TIMEOUT, workers=workers)
        for runner in (local, isolated):
            state, outcome = await runner.setup()
            assert state.value == "ready", outcome.execution
        pid = worker_pid(workers, "isolated")
        await timed_runs(local, 200)  # warm up both
        await timed_runs(isolated, 200)
        times: dict[str, list[float]] = {"local": [], "isolated": []}
        cpu = {"local": 0.0, "isolated": 0.0, "worker": 0.0}
        for _ in range(blocks):
            spent, hub_cpu = await timed_runs(local, per_block)
            times["local"] += spent
            cpu["local"] += hub_cpu
            worker_before = cpu_seconds(pid)
            spent, hub_cpu = await timed_runs(isolated, per_block)
            times["isolated"] += spent
            cpu["isolated"] += hub_cpu
            cpu["worker"] += cpu_seconds(pid) - worker_before
        await isolated.teardown()
        await isolated.close()
    runs = blocks * per_block
    local_median, isolated_median = median(times["local"]), median(times["isolated"])
    added = (isolated_median - local_median) * 1000
    cpu_local = cpu["local"] / runs * 1000
    cpu_isolated = (cpu["isolated"] + cpu["worker"]) / runs * 1000
    details: dict[str, Any] = {
        "runs_each": runs,
        "in_process_median_ms": round(local_median * 1000, 3),
        "isolated_median_ms": round(isolated_median * 1000, 3),
        "in_process_p99_ms": round(percentile(times["local"], 99) * 1000, 3),
        "isolated_p99_ms": round(percentile(times["isolated"], 99) * 1000, 3),
        "added_p99_ms": round(
            (percentile(times["isolated"], 99) - percentile(times["local"], 99)) * 1000, 3
        ),
        "cpu_per_run_in_process_ms": round(cpu_local, 3),
        "cpu_per_run_isolated_ms": round(cpu_isolated, 3),
        "cpu_per_run_isolated_hub_ms": round(cpu["isolated"] / runs * 1000, 3),
        "cpu_per_run_isolated_worker_ms": round(cpu["worker"] / runs * 1000, 3),
        "cpu_ratio": round(cpu_isolated / cpu_local, 2) if cpu_local else None,
    }
    log(f"isolation.overhead: +{added:.3f} ms per run; {details}")
    return result(
        "isolation.overhead",
        added,
        "ms",
        value_target("<", 2.0, "ms"),
        baseline=local_median * 1000,
        baseline_name="the same run in process (median ms)",
        details=details,
    )


async def memory(quick: bool) -> list[Result]:
    async with Workers() as workers:
        alone = ProcessRunner("alone", plugin("alone"), TIMEOUT, workers=workers)
        await alone.setup()
        for _ in range(20):
            await alone.collect("manual")
        await anyio.sleep(1.0)
        idle = rss_bytes(worker_pid(workers, "alone"))
        group = [
            ProcessRunner(f"g{i}", plugin(f"g{i}"), TIMEOUT, workers=workers, worker="group")
            for i in range(20)
        ]
        await group[0].setup()
        await group[0].collect("manual")
        await anyio.sleep(0.5)
        one = rss_bytes(worker_pid(workers, "group"))
        for runner in group[1:]:
            await runner.setup()
        for _ in range(5):
            for runner in group:
                await runner.collect("manual")
        await anyio.sleep(1.0)
        twenty = rss_bytes(worker_pid(workers, "group"))
        hub = rss_bytes(os.getpid())
    per_instance = (twenty - one) / 19
    log(
        f"isolation.memory: idle worker {idle / MB:.1f} MB; group of 20 {twenty / MB:.1f} MB"
        f" ({per_instance / 1024:.0f} kB per instance)"
    )
    return [
        result(
            "isolation.memory",
            idle / MB,
            "MB",
            value_target("<", 30.0, "MB"),
            details={"hub_rss_mb": round(hub / MB, 1)},
        ),
        result(
            "isolation.memory_group",
            twenty / MB,
            "MB",
            ratio_target("<=", 1.5),
            baseline=one / MB,
            baseline_name="the same group worker with one instance (MB)",
            details={"per_instance_kb": round(per_instance / 1024, 1)},
        ),
    ]


def run(quick: bool) -> list[Result]:
    async def main() -> list[Result]:
        return [await overhead(quick), *await memory(quick)]

    return anyio.run(main)
