"""The typed events the hub publishes on its bus.

Every consumer (the web stream, the latest-bodies cache, later a Redis bus, the alert engine
and exporters) reads these classes; none of them carries a web-format dict. An event's
``type`` names it on the wire and in filters; :func:`~homelab_core.codec.to_builtins` turns
any of them into JSON-ready values.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import attrs

from .model import Execution, Health, InstanceState, Metric

EventType = Literal["metrics", "status", "execution", "plugin", "alert"]


@attrs.frozen
class Event:
    """Base of every bus event: which instance it concerns and when it happened."""

    type: ClassVar[EventType]
    instance_id: str
    timestamp: float = attrs.field(factory=time.time, kw_only=True)


@attrs.frozen
class MetricsCollected(Event):
    """A collection succeeded: the validated metrics, each with its timestamp."""

    type: ClassVar[EventType] = "metrics"
    metrics: list[Metric]


@attrs.frozen
class HealthChanged(Event):
    """An instance's health state changed (not every run: only a change of state)."""

    type: ClassVar[EventType] = "status"
    old: Health
    new: Health


@attrs.frozen
class ExecutionFinished(Event):
    """A run ended (or was skipped): its record."""

    type: ClassVar[EventType] = "execution"
    execution: Execution


@attrs.frozen
class InstanceChanged(Event):
    """An instance was enabled or disabled."""

    type: ClassVar[EventType] = "plugin"
    enabled: bool
    state: InstanceState


@attrs.frozen
class AlertChanged(Event):
    """An alert changed state (``inactive``, ``pending``, ``firing``, ``resolved``).

    ``instance_id`` is the instance the alert is about ("" when none).
    """

    type: ClassVar[EventType] = "alert"
    rule: str
    fingerprint: str
    old: str
    new: str
    severity: str
    labels: dict[str, str]
    summary: str
    value: float | None
    silenced: bool
