"""Homelab Core: a plugin framework for homelab monitoring.

Plugin authors need :data:`hookimpl`, :class:`Plugin`, :class:`Metric` and :func:`option`;
embedders need :class:`Hub` and :func:`load_settings`.
"""

from importlib.metadata import PackageNotFoundError, version

from .bus import Bus, Event, MemoryBus, Subscription
from .cache import AiocacheLatest, LatestCache
from .config import InstanceSettings, Settings, load_settings
from .errors import (
    ConfigError,
    HomelabError,
    PluginError,
    PluginLoadError,
    PluginRegistrationError,
    StoreError,
    UnknownPluginError,
)
from .hookspecs import hookimpl, hookspec
from .hub import Hub, InstanceInfo
from .model import (
    Execution,
    ExecutionStatus,
    Health,
    HealthReport,
    HealthState,
    HistorySeries,
    Metric,
    MetricKind,
    Point,
)
from .options import NoConfig, option
from .plugin import Plugin
from .plugins import PluginManager
from .scheduler import RunResult, Scheduler

try:
    __version__ = version("homelab-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "AiocacheLatest",
    "Bus",
    "ConfigError",
    "Event",
    "Execution",
    "ExecutionStatus",
    "Health",
    "HealthReport",
    "HealthState",
    "HistorySeries",
    "HomelabError",
    "Hub",
    "InstanceInfo",
    "InstanceSettings",
    "LatestCache",
    "MemoryBus",
    "Metric",
    "MetricKind",
    "NoConfig",
    "Plugin",
    "PluginError",
    "PluginLoadError",
    "PluginManager",
    "PluginRegistrationError",
    "Point",
    "RunResult",
    "Scheduler",
    "Settings",
    "StoreError",
    "Subscription",
    "UnknownPluginError",
    "__version__",
    "hookimpl",
    "hookspec",
    "load_settings",
    "option",
]
