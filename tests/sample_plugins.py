"""Plugin types used by the tests: well-behaved ones and every kind of misbehaviour."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import attrs

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option


@attrs.define
class CounterConfig:
    series: int = option(1, description="How many series to report.")
    delay: float = option(0.0, description="Seconds each collection takes.")
    token: str = option("", secret=True, description="A secret that must never show.")


class Counter(Plugin[CounterConfig]):
    """Counts its collections; async."""

    name = "counter"
    title = "Counter"
    category = "test"
    description = "Reports how many times it has run."
    default_interval = 0.1

    def __init__(self, config: CounterConfig, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.runs = 0
        self.active = 0
        self.max_active = 0
        self.started: list[float] = []
        self.torn_down = False

    async def collect(self) -> list[Metric]:
        self.started.append(anyio.current_time())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.config.delay:
                await anyio.sleep(self.config.delay)
            self.runs += 1
            return [
                Metric("count", self.runs, unit="runs", labels={"series": str(i)})
                for i in range(self.config.series)
            ]
        finally:
            self.active -= 1

    async def teardown(self) -> None:
        self.torn_down = True


class Raises(Plugin):
    """Every collection raises."""

    name = "raises"
    default_interval = 0.1

    def __init__(self, config: Any, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.started: list[float] = []

    async def collect(self) -> list[Metric]:
        self.started.append(anyio.current_time())
        raise RuntimeError("the sensor is on fire")


class Hangs(Plugin):
    """Every collection waits forever (async, so the timeout can cancel it)."""

    name = "hangs"
    default_interval = 0.1

    async def collect(self) -> list[Metric]:
        await anyio.sleep_forever()
        return []


class Blocks(Plugin):
    """A sync collection that blocks its worker thread until released."""

    name = "blocks"
    default_interval = 0.1
    release = threading.Event()

    def collect(self) -> list[Metric]:
        self.release.wait(timeout=5)
        return [Metric("blocked", 1)]


class BlocksThenTearsDown(Blocks):
    """Records whether ``teardown()`` came while a collection was still blocked."""

    name = "blocks_teardown"
    torn_down_while_blocked: bool | None = None

    def teardown(self) -> None:
        BlocksThenTearsDown.torn_down_while_blocked = not Blocks.release.is_set()


class FailsSetup(Plugin):
    """Setup fails ``failures`` times, then succeeds."""

    name = "fails_setup"
    default_interval = 0.1
    failures = 2

    def __init__(self, config: Any, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.attempts = 0

    def setup(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError(f"not ready (attempt {self.attempts})")

    def collect(self) -> list[Metric]:
        return [Metric("ready", 1)]


class Garbage(Plugin):
    """Returns something that is not a list of metrics."""

    name = "garbage"
    default_interval = 0.1

    def collect(self) -> Any:
        return "not metrics"


class Judges(Plugin):
    """Reports its own health: degraded while the target reports a problem."""

    name = "judges"
    default_interval = 0.1

    def collect(self) -> list[Metric]:
        return [Metric("up", 0)]

    def health(self) -> HealthReport:
        return HealthReport("degraded", "target answers slowly")


ALL: list[type[Plugin]] = [Counter, Raises, Hangs, Blocks, FailsSetup, Garbage, Judges]


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    for plugin_type in ALL:
        register(plugin_type)


def make(plugin_type: type[Plugin], instance_id: str | None = None, **config: Any) -> Any:
    """An instance of ``plugin_type`` with ``config`` as keyword arguments of its Config."""
    return plugin_type(plugin_type.Config(**config), instance_id=instance_id or plugin_type.name)


class SlowSetup(Plugin):
    """A sync setup whose first call outlives the timeout; records overlapping calls."""

    name = "slow_setup"
    default_interval = 0.1

    def __init__(self, config: Any, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def setup(self) -> None:
        with self.lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            first = self.calls == 1
        try:
            if first:
                threading.Event().wait(0.3)
        finally:
            with self.lock:
                self.active -= 1

    def collect(self) -> list[Metric]:
        return [Metric("ready", 1)]
