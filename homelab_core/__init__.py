"""Homelab Core: a plugin framework for homelab monitoring.

Plugin authors need :data:`hookimpl`, :class:`Plugin`, :class:`Metric` and :func:`option`;
embedders need :class:`Hub` and :func:`load_settings`.

:class:`Hub` and the cache load on first use: ``import homelab_core`` (and ``homelab
--version``) does not import Tortoise, aiocache, httpx or Quart.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .bus import Bus, MemoryBus, Subscription
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

if TYPE_CHECKING:
    from .cache import AiocacheLatest, LatestCache
    from .hub import Hub

try:
    __version__ = version("homelab-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

#: Names whose modules import Tortoise or aiocache: imported when first used.
_LAZY = {"AiocacheLatest": "cache", "Hub": "hub", "LatestCache": "cache"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'homelab_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


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
