"""The plugin author's test kit: run a plugin once, drive it with a clock, wait on a hub.

Installed with the library and registered as the pytest plugin ``homelab`` (entry point
group ``pytest11``), which adds the fixtures ``homelab_hub`` and ``homelab_clock``; turn it
off with ``pytest -p no:homelab``. Importing this module does not import pytest: the
library does not depend on it, only the fixtures (``homelab_core.testing.fixtures``) do.

- :func:`run_plugin` / :func:`run_plugin_async`: one run like ``homelab run --once``,
  as a :class:`PluginRun` with look-ups by metric name and labels.
- :class:`PluginHarness` (async) / :func:`plugin_harness` (sync): set up once, collect
  as often as the test likes, tear down at the end.
- :func:`use_isolation`: run them all in a worker process (``isolation = "process"``).
- :class:`Clock`: the time a plugin sees through ``Plugin.now()`` and
  ``Plugin.monotonic()``, and the timestamp given to metrics that carry none. It does
  not control sleeps, timeouts or the scheduler's intervals (anyio's clock), nor a
  plugin's own calls of ``time.time()`` or ``time.monotonic()``.
- :func:`wait_for_runs`, :func:`wait_for_health`, :func:`wait_for_metric`: bounded waits
  on a running :class:`~homelab_core.Hub`, failing with what was seen instead.
"""

from __future__ import annotations

from ._clock import Clock
from ._hub import HubFactory, wait_for_health, wait_for_metric, wait_for_runs
from ._run import (
    PluginHarness,
    PluginRun,
    SyncHarness,
    plugin_harness,
    run_plugin,
    run_plugin_async,
    use_isolation,
)

#: Loaded by pytest with this module (the entry point), so ``-p no:homelab`` drops them too.
pytest_plugins = ["homelab_core.testing.fixtures"]

__all__ = [
    "Clock",
    "HubFactory",
    "PluginHarness",
    "PluginRun",
    "SyncHarness",
    "plugin_harness",
    "run_plugin",
    "run_plugin_async",
    "use_isolation",
    "wait_for_health",
    "wait_for_metric",
    "wait_for_runs",
]
