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

from ..alerts.service import AlertInfo, NotifierInfo
from ..alerts.silences import Silence
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
from ..store.alerts import AlertEvent

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


class InstanceIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/plugins``: a new instance, owned by the store. Checked by the
    rules of a ``[plugins.<id>]`` table (docs/configuration.md), with the same messages."""

    id: Annotated[
        str,
        msgspec.Meta(
            description="A lowercase slug, unique among the instances of the file and the API.",
            examples=["nas-web"],
        ),
    ]
    type: Annotated[
        str,
        msgspec.Meta(description="An installed plugin type (GET /api/types).", examples=["http"]),
    ]
    interval: Annotated[
        float | None,
        msgspec.Meta(description="Seconds between runs; null: the type's default.", examples=[60]),
    ] = None
    timeout: Annotated[
        float | None,
        msgspec.Meta(description="Seconds one run may take; null: the default.", examples=[10]),
    ] = None
    enabled: Annotated[bool, msgspec.Meta(description="Whether it runs.", examples=[True])] = True
    options: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="The type's options (its config_schema). Secrets are accepted and"
            " stored, never returned.",
            examples=[{"url": "https://nas.lan/"}],
        ),
    ] = {}

    def table(self) -> dict[str, Any]:
        """The ``[plugins.<id>]`` table this body stands for."""
        table: dict[str, Any] = {"type": self.type, "enabled": self.enabled, **self.options}
        for key in ("interval", "timeout"):
            if getattr(self, key) is not None:
                table[key] = getattr(self, key)
        return table


class InstanceChangeIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PATCH /api/plugins/{id}``: only what changes. An option set to null goes
    back to its default; a secret left out (or sent back as ``**********``) is kept."""

    interval: Annotated[
        float | msgspec.UnsetType | None,
        msgspec.Meta(description="Seconds between runs; null: the type's default.", examples=[30]),
    ] = msgspec.UNSET
    timeout: Annotated[
        float | msgspec.UnsetType | None,
        msgspec.Meta(description="Seconds one run may take; null: the default.", examples=[5]),
    ] = msgspec.UNSET
    enabled: Annotated[
        bool | msgspec.UnsetType, msgspec.Meta(description="Whether it runs.", examples=[False])
    ] = msgspec.UNSET
    options: Annotated[
        dict[str, Any],
        msgspec.Meta(
            description="Options to change (the others keep their values).",
            examples=[{"url": "https://nas.lan/health"}],
        ),
    ] = {}

    def changes(self) -> dict[str, Any]:
        """The keys of the ``[plugins.<id>]`` table to change (None: back to the default)."""
        found: dict[str, Any] = dict(self.options)
        for key in ("interval", "timeout", "enabled"):
            value = getattr(self, key)
            if value is not msgspec.UNSET:
                found[key] = value
        return found


@attrs.define
class DeleteQuery:
    """Parameters of ``DELETE /api/plugins/{id}``."""

    #: Also delete the instance's history (series, samples, executions, health changes).
    purge: bool = False


@attrs.define
class ReloadOut:
    """What ``POST /api/reload`` changed."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    restart_needed: list[str]
    message: str


@attrs.define
class TypeDetails:
    """An installed plugin type: its metadata and the JSON Schema of its options."""

    type: TypeInfo
    source: str
    config_schema: dict[str, Any]


@attrs.define
class TypeList:
    types: list[TypeDetails]
    count: int


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


AlertState = Literal["pending", "firing", "resolved"]
AlertSeverity = Literal["critical", "warning", "info"]
#: The longest silence the API makes (about 10 years): keeps its end within MAX_TIME.
MAX_SILENCE = 3.2e8


@attrs.define
class AlertsQuery:
    """Filters of ``GET /api/alerts``."""

    state: AlertState | None = None
    severity: AlertSeverity | None = None


@attrs.define
class AlertList:
    alerts: list[AlertInfo]
    count: int


@attrs.define
class AlertHistoryQuery:
    """Parameters of ``GET /api/alerts/history``: page with ``before`` (an event id)."""

    rule: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)] = 100
    before: Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | None = None


@attrs.define
class AlertHistoryOut:
    events: list[AlertEvent]
    next_before: int | None


class RuleOut(msgspec.Struct, rename={"for_": "for"}, kw_only=True):
    """A rule (``[alerts.<id>]``, or made through the API), its fields named as in
    homelab.toml; ``source`` says which (a rule of the file is changed in the file)."""

    id: str
    source: Literal["file", "api"]
    kind: Literal["value", "health", "absence"]
    severity: AlertSeverity
    metric: str
    match: dict[str, str]
    instances: list[str]
    types: list[str]
    op: str
    threshold: float | None
    resolve_threshold: float | None
    window: float
    function: str
    states: list[str]
    of: str
    for_: float
    keep_firing_for: float
    labels: dict[str, str]
    summary: str
    description: str
    notifiers: list[str]


_Unset = msgspec.UnsetType
_UNSET = msgspec.UNSET


class RuleIn(msgspec.Struct, rename={"for_": "for"}, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/alerts/rules`` (with ``id``) and ``PUT /api/alerts/rules/{id}``:
    the keys of an ``[alerts.<id>]`` table (docs/alerts.md), checked by the same rules.
    Durations are seconds or text such as ``"5m"``."""

    kind: Literal["value", "health", "absence"] | _Unset = _UNSET
    metric: str | _Unset = _UNSET
    match: dict[str, str] | _Unset = _UNSET
    instances: list[str] | _Unset = _UNSET
    types: list[str] | _Unset = _UNSET
    op: Literal[">", ">=", "<", "<=", "==", "!="] | _Unset = _UNSET
    threshold: float | _Unset = _UNSET
    resolve_threshold: float | _Unset = _UNSET
    window: float | str | _Unset = _UNSET
    function: Literal["last", "avg", "min", "max", "rate"] | _Unset = _UNSET
    states: list[Literal["failing", "degraded", "failed"]] | _Unset = _UNSET
    of: Literal["series", "runs"] | _Unset = _UNSET
    for_: float | str | _Unset = _UNSET
    keep_firing_for: float | str | _Unset = _UNSET
    severity: AlertSeverity | _Unset = _UNSET
    labels: dict[str, str] | _Unset = _UNSET
    summary: str | _Unset = _UNSET
    description: str | _Unset = _UNSET
    notifiers: list[str] | _Unset = _UNSET

    def table(self) -> dict[str, Any]:
        """The keys given, as an ``[alerts.<id>]`` table would hold them."""
        return {
            ("for" if name == "for_" else name): value
            for name in self.__struct_fields__
            if name != "id" and (value := getattr(self, name)) is not _UNSET
        }


class NewRuleIn(RuleIn, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/alerts/rules``: a rule and its id (a slug, unique)."""

    id: str


@attrs.define
class RuleList:
    rules: list[RuleOut]
    count: int


@attrs.define
class SilencesQuery:
    """Parameters of ``GET /api/silences``."""

    include_expired: bool = False


@attrs.define
class SilenceIn:
    """Body of ``POST /api/silences``: ``ends_at`` or ``duration`` (seconds), not both.

    Times are epoch seconds or text as ``since`` takes it (ISO 8601, ``now``).
    """

    matchers: dict[str, str]
    ends_at: float | Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)] | None = None
    duration: Annotated[float, msgspec.Meta(gt=0, le=MAX_SILENCE)] | None = None
    starts_at: float | Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    author: Annotated[str, msgspec.Meta(max_length=256)] = ""


@attrs.define
class SilenceList:
    silences: list[Silence]
    count: int


@attrs.define
class NotifierList:
    notifiers: list[NotifierInfo]
    count: int


@attrs.define
class NotifierTestOut:
    """The answer of ``POST /api/notifiers/{id}/test``: whether the message was delivered."""

    ok: bool
    error: str | None


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
    RuleOut,
    AlertInfo,
    AlertEvent,
    NotifierInfo,
    Silence,
)
