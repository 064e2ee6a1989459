"""Alerts and notifications: rules on values, health and absence, evaluated on every
sample as it is collected; silences and maintenance windows; routing, grouping and
delivery to notifiers, which are plugins (``register_notifiers``). See docs/alerts.md.

:class:`AlertService` is the one unit that evaluates and sends, started and stopped by the
hub. Nothing here imports Quart.
"""

from __future__ import annotations

from typing import Any

from .config import (
    AlertingSettings,
    AlertsConfig,
    MaintenanceSettings,
    NotifierSettings,
    RouteSettings,
    RuleSettings,
    parse_alerts_config,
    parse_duration,
    parse_rule,
)
from .engine import Alert, AlertEngine, Transition
from .silences import MaintenanceWindow, Silence
from .templates import Template, TemplateError

#: Names whose module imports the store (Tortoise): imported when first used.
_LAZY = ("AlertInfo", "AlertService", "NotifierInfo", "UnknownNotifierError", "UnknownSilenceError")


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import service

    return getattr(service, name)


__all__ = [
    "Alert",
    "AlertEngine",
    "AlertInfo",
    "AlertService",
    "AlertingSettings",
    "AlertsConfig",
    "MaintenanceSettings",
    "MaintenanceWindow",
    "NotifierInfo",
    "NotifierSettings",
    "RouteSettings",
    "RuleSettings",
    "Silence",
    "Template",
    "TemplateError",
    "Transition",
    "UnknownNotifierError",
    "UnknownSilenceError",
    "parse_alerts_config",
    "parse_duration",
    "parse_rule",
]
