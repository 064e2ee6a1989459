"""Plugin types that do what one process cannot contain, for the process isolation tests.

Each is importable by module path (``isolation_plugins.X``), as a worker process needs.
``Where`` reports the process it runs in, so a test can tell a worker from the hub.
"""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

import anyio
import attrs

from homelab_core import Metric, Plugin, hookimpl, option

#: What a leaking plugin keeps, in its worker process.
_LEAKED: list[bytearray] = []


@attrs.define
class WhereConfig:
    token: str = option("", description="A secret, reported only by its length.", secret=True)
    say: str = option("", description="A line to log at each run.")
    delay: float = option(0.0, description="Seconds each collection waits (async).")


class Where(Plugin[WhereConfig]):
    """Reports its process id, its parent's, and how many times this object was set up."""

    name = "where"
    default_interval = 0.1

    def __init__(self, config: Any, *, instance_id: str) -> None:
        super().__init__(config, instance_id=instance_id)
        self.setups = 0

    async def setup(self) -> None:
        self.setups += 1

    async def collect(self) -> list[Metric]:
        if self.config.delay:
            await anyio.sleep(self.config.delay)
        if self.config.say:
            print(f"print() from {self.instance_id}: this must not reach the protocol")
            self.log.warning("%s (token %s)", self.config.say, self.config.token)
        return [
            Metric("pid", os.getpid()),
            Metric("ppid", os.getppid()),
            Metric("setups", self.setups),
            Metric("token_length", len(self.config.token)),
            Metric("now", self.now()),
        ]


class Exits(Plugin):
    """``os._exit(1)`` in collect: the process ends with nothing flushed."""

    name = "exits"
    default_interval = 0.2

    def collect(self) -> list[Metric]:
        os._exit(1)


class Segfaults(Plugin):
    """Reads address 0: SIGSEGV, as a broken C extension would."""

    name = "segfaults"
    default_interval = 0.2

    def collect(self) -> list[Metric]:
        ctypes.string_at(0)
        return []


class SleepsInAsync(Plugin):
    """Blocking code in an async method: ``time.sleep`` holds its event loop."""

    name = "sleeps_in_async"
    default_interval = 0.2

    async def collect(self) -> list[Metric]:
        time.sleep(30)  # noqa: ASYNC251 - the fault under test
        return []


class Leaks(Plugin):
    """Keeps 10 MB more at every run."""

    name = "leaks"
    default_interval = 0.1

    def collect(self) -> list[Metric]:
        _LEAKED.append(bytearray(b"\x01") * (10 * 1024 * 1024))  # written: resident
        return [Metric("leaked_mb", 10 * len(_LEAKED))]


class LoopsInSetup(Plugin):
    """An infinite loop in setup()."""

    name = "loops_in_setup"
    default_interval = 0.2

    def setup(self) -> None:
        while True:
            pass

    def collect(self) -> list[Metric]:
        return [Metric("never", 1)]


class RaisesSystemExit(Plugin):
    """``raise SystemExit(3)`` in an async collect."""

    name = "raises_system_exit"
    default_interval = 0.2

    async def collect(self) -> list[Metric]:
        raise SystemExit(3)


@attrs.define
class CleansUpConfig:
    mark: str = option("", description="A file written when the run is cancelled.")


class CleansUp(Plugin[CleansUpConfig]):
    """Waits forever in an async collect; writes ``mark`` when that wait is cancelled (the
    clean-up a plugin does in ``finally``: kill its child process, close its socket)."""

    name = "cleans_up"

    async def collect(self) -> list[Metric]:
        try:
            await anyio.sleep(30)
        finally:
            Path(self.config.mark).write_text("cleaned up", encoding="utf-8")  # noqa: ASYNC240
        return []


TYPES = (CleansUp, Where, Exits, Segfaults, SleepsInAsync, Leaks, LoopsInSetup, RaisesSystemExit)


@hookimpl
def register_plugins(register: Any) -> None:
    for plugin_type in TYPES:
        register(plugin_type)
