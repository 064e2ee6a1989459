"""Plugin types the benchmarks run, registered by hand (never through entry points)."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from homelab_core import Metric, Plugin, hookimpl, option
from homelab_core.plugins import PluginManager


class Idle(Plugin):
    """Collects nothing: an instance that only owns stored series."""

    name = "bench_idle"
    title = "Idle"
    category = "bench"

    def collect(self) -> list[Metric]:
        return []


@attrs.frozen
class BurstConfig:
    metrics: int = option(50, description="Metrics per collection.")


class Burst(Plugin):
    """Returns ``metrics`` fresh gauges per collection, as a busy exporter would (async)."""

    name = "bench_burst"
    title = "Burst"
    category = "bench"
    Config = BurstConfig

    def __init__(self, config: BurstConfig, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.names = [(f"value.{n % 10}", {"n": str(n)}) for n in range(config.metrics)]
        self.runs = 0

    async def collect(self) -> list[Metric]:
        self.runs += 1
        now = time.time()
        return [
            Metric(name, float(self.runs), labels=labels, timestamp=now)
            for name, labels in self.names
        ]


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    register(Idle)
    register(Burst)


def manager() -> PluginManager:
    """A plugin manager with only the benchmark types."""
    import sys

    plugins = PluginManager(load_entry_points=False)
    plugins.register(sys.modules[__name__], name="bench")
    return plugins
