"""Request and response schemas of the REST API (attrs classes, validated by msgspec).

The domain types (an instance, its health, an execution, a metric, run counters, a type's
metadata, the summary) are the core's own classes from :mod:`homelab_core.model`, used here
as they are: an API field cannot drift from the type it shows. This module adds only the
envelopes (lists with counts, pages) and the queries.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import attrs
import msgspec

from ..model import (
    Execution,
    ExecutionStatus,
    Health,
    HealthState,
    InstanceInfo,
    Metric,
    RunStats,
    Summary,
    TypeInfo,
)

#: What ``since`` and ``until`` look like: ``now``, ``-1h``-style, epoch seconds, ISO 8601.
TIME_PATTERN = (
    r"^(now|-\d+(\.\d+)?[smhdw]|\d+(\.\d+)?"
    r"|\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?)$"
)

#: Bounds the API enforces through the schema (and so documents in /openapi.json).
MAX_STEP = 1e9  # seconds, about 30 years
MAX_POINTS = 2000  # per series in one history answer
MAX_LIMIT = 1000  # executions in one page
MAX_ID = 2**63 - 1  # the largest execution id


@attrs.define
class Error:
    """The body of every error response: ``{"error": {"code": ..., "message": ...}}``."""

    code: str
    message: str


@attrs.define
class ErrorBody:
    error: Error


@attrs.define
class PluginsQuery:
    """Filters of ``GET /api/plugins``."""

    category: str | None = None
    enabled: bool | None = None
    status: HealthState | None = None


@attrs.define
class PluginList:
    plugins: list[InstanceInfo]
    count: int


@attrs.define
class PluginDetails:
    plugin: InstanceInfo
    type: TypeInfo
    config_schema: dict[str, Any]
    stats: RunStats


@attrs.define
class EnableIn:
    """Body of ``POST /api/plugins/{id}/enable``."""

    enabled: bool


@attrs.define
class MetricList:
    plugin_id: str
    metrics: list[Metric]


@attrs.define
class HistoryQuery:
    """Parameters of ``GET /api/plugins/{id}/metrics/history``.

    ``since`` and ``until`` take ISO 8601 times, seconds since the epoch, or times
    relative to now such as ``-1h``, ``-30m``, ``-7d``; ``labels`` is ``k=v,k2=v2``.
    """

    metric: Annotated[str, msgspec.Meta(min_length=1)]
    since: Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)] = "-1h"
    until: Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)] | None = None
    step: Annotated[float, msgspec.Meta(gt=0, le=MAX_STEP)] | None = None
    agg: Literal["avg", "min", "max"] = "avg"
    labels: str | None = None
    points: Annotated[int, msgspec.Meta(ge=1, le=MAX_POINTS)] = 500


@attrs.define
class HistorySeriesOut:
    name: str
    labels: dict[str, str]
    unit: str
    resolution: float
    points: list[tuple[float, float]]


@attrs.define
class HistoryOut:
    plugin_id: str
    metric: str
    since: float
    until: float
    agg: str
    series: list[HistorySeriesOut]


@attrs.define
class ExecutionsQuery:
    """Parameters of ``GET /api/plugins/{id}/executions``."""

    status: ExecutionStatus | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 50
    before: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | None = None


@attrs.define
class ExecutionList:
    plugin_id: str
    executions: list[Execution]
    next_before: int | None


@attrs.define
class CategoryOut:
    name: str
    count: int


@attrs.define
class CategoryList:
    categories: list[CategoryOut]


@attrs.define
class HealthCheckOut:
    status: Literal["ok", "unavailable"]
    live: bool
    ready: bool
    store: bool
    scheduler: bool
    writer: bool
    #: Why the hub is not ready ("" when it is): the failing write, or why the scheduler
    #: stopped.
    reason: str = ""


#: Every schema class, for the OpenAPI document's components.
SCHEMA_CLASSES = (
    *(
        value
        for value in list(globals().values())
        if isinstance(value, type) and attrs.has(value) and value.__module__ == __name__
    ),
    Execution,
    Health,
    InstanceInfo,
    Metric,
    RunStats,
    Summary,
    TypeInfo,
)
