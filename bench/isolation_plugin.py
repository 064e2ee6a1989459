"""The plugin ``bench/isolation.py`` runs: a module of its own, as a worker must import it."""

from __future__ import annotations

from homelab_core import Metric, Plugin

#: Metrics each collection returns.
METRICS = 50


class FiftyMetrics(Plugin):
    """Returns the same 50 gauges every run, doing nothing else."""

    name = "fifty_metrics"

    async def collect(self) -> list[Metric]:
        return [Metric(f"value.{i}", float(i), "%", {"core": str(i % 4)}) for i in range(METRICS)]
