"""Homelab Core: a plugin framework for homelab monitoring.

Plugin authors need :data:`hookimpl`, :class:`Plugin`, :class:`Metric` and :func:`option`;
embedders need :class:`Hub` and :func:`load_settings`.

Every name loads its module on first use: ``import homelab_core`` (and ``homelab
--version``) imports nothing else, and a plugin that takes :class:`Plugin` and
:class:`Metric` does not import Tortoise, aiocache, httpx or Quart. That keeps a worker
process (``isolation = "process"``) small: it imports only what its plugin uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bus import Bus, MemoryBus, Subscription
    from .cache import AiocacheLatest, LatestCache
    from .config import InstanceSettings, Settings, load_settings
    from .errors import (
        ClusterError,
        ConfigError,
        ConflictError,
        HomelabError,
        InvalidArgumentError,
        NotFoundError,
        PluginError,
        PluginLoadError,
        PluginRegistrationError,
        SetupFailed,
        SetupNotReady,
        StoreError,
        UnknownInstanceError,
        UnknownPluginTypeError,
    )
    from .events import Event, ExecutionFinished, HealthChanged, InstanceChanged, MetricsCollected
    from .hookspecs import hookimpl, hookspec
    from .hub import Hub
    from .model import (
        Execution,
        ExecutionStatus,
        Health,
        HealthReport,
        HealthState,
        HealthTransition,
        HistorySeries,
        InstanceInfo,
        InstanceState,
        Metric,
        MetricKind,
        NodeInfo,
        Point,
    )
    from .notifier import AlertNotice, Notification, Notifier, NotifierError
    from .options import NoConfig, option
    from .plugin import Plugin
    from .plugins import PluginManager
    from .redact import redact_urls
    from .scheduler import RunResult, Scheduler

    __version__: str

#: Each public name and the module that defines it.
_LAZY = {
    "AiocacheLatest": "cache",
    "AlertNotice": "notifier",
    "Bus": "bus",
    "ClusterError": "errors",
    "ConfigError": "errors",
    "ConflictError": "errors",
    "Event": "events",
    "Execution": "model",
    "ExecutionFinished": "events",
    "ExecutionStatus": "model",
    "Health": "model",
    "HealthChanged": "events",
    "HealthReport": "model",
    "HealthState": "model",
    "HealthTransition": "model",
    "HistorySeries": "model",
    "HomelabError": "errors",
    "Hub": "hub",
    "InstanceChanged": "events",
    "InstanceInfo": "model",
    "InstanceSettings": "config",
    "InstanceState": "model",
    "InvalidArgumentError": "errors",
    "LatestCache": "cache",
    "MemoryBus": "bus",
    "Metric": "model",
    "MetricKind": "model",
    "MetricsCollected": "events",
    "NoConfig": "options",
    "NodeInfo": "model",
    "NotFoundError": "errors",
    "Notification": "notifier",
    "Notifier": "notifier",
    "NotifierError": "notifier",
    "Plugin": "plugin",
    "PluginError": "errors",
    "PluginLoadError": "errors",
    "PluginManager": "plugins",
    "PluginRegistrationError": "errors",
    "Point": "model",
    "RunResult": "scheduler",
    "Scheduler": "scheduler",
    "Settings": "config",
    "SetupFailed": "errors",
    "SetupNotReady": "errors",
    "StoreError": "errors",
    "Subscription": "bus",
    "UnknownInstanceError": "errors",
    "UnknownPluginTypeError": "errors",
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    "load_settings": "config",
    "option": "options",
    "redact_urls": "redact",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    else:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'homelab_core' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("homelab-core")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "AiocacheLatest",
    "AlertNotice",
    "Bus",
    "ClusterError",
    "ConfigError",
    "ConflictError",
    "Event",
    "Execution",
    "ExecutionFinished",
    "ExecutionStatus",
    "Health",
    "HealthChanged",
    "HealthReport",
    "HealthState",
    "HealthTransition",
    "HistorySeries",
    "HomelabError",
    "Hub",
    "InstanceChanged",
    "InstanceInfo",
    "InstanceSettings",
    "InstanceState",
    "InvalidArgumentError",
    "LatestCache",
    "MemoryBus",
    "Metric",
    "MetricKind",
    "MetricsCollected",
    "NoConfig",
    "NodeInfo",
    "NotFoundError",
    "Notification",
    "Notifier",
    "NotifierError",
    "Plugin",
    "PluginError",
    "PluginLoadError",
    "PluginManager",
    "PluginRegistrationError",
    "Point",
    "RunResult",
    "Scheduler",
    "Settings",
    "SetupFailed",
    "SetupNotReady",
    "StoreError",
    "Subscription",
    "UnknownInstanceError",
    "UnknownPluginTypeError",
    "__version__",
    "hookimpl",
    "hookspec",
    "load_settings",
    "option",
    "redact_urls",
]
