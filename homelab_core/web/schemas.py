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
from ..fielddoc import about
from ..model import (
    Execution,
    ExecutionStatus,
    Health,
    HealthState,
    HealthTransition,
    InstanceInfo,
    Metric,
    NodeInfo,
    RunStats,
    Summary,
    TypeInfo,
)
from ..status import StatusPage
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
#: The forms ``since`` and ``until`` take, in words (the 400 of another form says them).
TIME_FORMS = (
    "ISO 8601 (2026-12-01T20:00:00Z; no zone: UTC), epoch seconds (1795970969),"
    " now, or a time relative to now such as -1h, -30m, -7d (units s, m, h, d, w)"
)
#: The forms ``step`` takes, in words.
STEP_FORMS = "seconds (300) or a duration such as 10s, 5m, 1h, 1d (units s, m, h, d, w)"
#: The start of a history range when the request gives none.
DEFAULT_SINCE = "-1h"


@attrs.define
class Error:
    """The body of every error response: ``{"error": {"code": ..., "message": ...}}``."""

    code: Annotated[str, about("A word for the kind of error (see docs/api.md).", "not_found")]
    message: Annotated[str, about("What was wrong, for a person.", "unknown instance 'nas'")]


@attrs.define
class ErrorBody:
    error: Annotated[Error, about("The error.")]


@attrs.define
class PluginsQuery:
    """Filters of ``GET /api/plugins``."""

    category: Annotated[str | None, about("Only instances of this category.", "network")] = None
    enabled: Annotated[
        bool | None, about("Only enabled (true) or disabled (false) instances.", True)
    ] = None
    status: Annotated[
        HealthState | None, about("Only instances in this health state.", "failing")
    ] = None


@attrs.define
class PluginList:
    plugins: Annotated[list[InstanceInfo], about("The instances.")]
    count: Annotated[int, about("How many.", 3)]


@attrs.define
class PluginDetails:
    plugin: Annotated[InstanceInfo, about("The instance.")]
    type: Annotated[TypeInfo, about("Its plugin type.")]
    config_schema: Annotated[
        dict[str, Any],
        about(
            "The JSON Schema of the type's options.",
            {"type": "object", "properties": {"url": {"type": "string"}}},
        ),
    ]
    stats: Annotated[RunStats, about("Its run counters since start.")]


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
    purge: Annotated[
        bool,
        about(
            "Also delete the instance's history (series, samples, executions, health changes).",
            False,
        ),
    ] = False


@attrs.define
class ReloadOut:
    """What ``POST /api/reload`` changed."""

    added: Annotated[list[str], about("Instances the file added, now started.", ["nas-web"])]
    removed: Annotated[
        list[str], about("Instances the file no longer has, now stopped.", ["old-ping"])
    ]
    changed: Annotated[
        list[str], about("Instances whose table changed, now restarted.", ["router"])
    ]
    restart_needed: Annotated[
        list[str], about("Sections that changed but apply only at the next start.", ["server"])
    ]
    message: Annotated[
        str,
        about(
            "What changed, in words.", "1 added, 1 removed, 1 changed; restart to apply [server]"
        ),
    ]


@attrs.define
class TypeDetails:
    """An installed plugin type: its metadata and the JSON Schema of its options."""

    type: Annotated[TypeInfo, about("The type's metadata.")]
    source: Annotated[str, about("The distribution that provides it.", "homelab-core")]
    config_schema: Annotated[
        dict[str, Any],
        about(
            "The JSON Schema of its options (secrets writeOnly).",
            {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]},
        ),
    ]


@attrs.define
class TypeList:
    types: Annotated[list[TypeDetails], about("The installed types.")]
    count: Annotated[int, about("How many.", 7)]


@attrs.define
class EnableIn:
    """Body of ``POST /api/plugins/{id}/enable``."""

    enabled: Annotated[bool, about("true to enable the instance, false to disable it.", False)]


@attrs.define
class MetricList:
    plugin_id: Annotated[str, about("The instance.", "system")]
    metrics: Annotated[list[Metric], about("The latest value of each of its series.")]


@attrs.define
class RangeQuery:
    """The range and buckets of a history query: ``since`` and ``until`` take the forms of
    :data:`TIME_FORMS`, ``step`` those of :data:`STEP_FORMS`."""

    since: Annotated[str, about(f"Start of the range: {TIME_FORMS}.", "-1h")] = DEFAULT_SINCE
    until: Annotated[str | None, about(f"End of the range (default now): {TIME_FORMS}.", "now")] = (
        None
    )
    step: Annotated[
        str | None,
        about(f"Seconds per bucket: {STEP_FORMS}; left out, the range over points buckets.", "5m"),
    ] = None
    agg: Annotated[
        Literal["avg", "min", "max"], about("How a bucket's samples are combined.", "max")
    ] = "avg"
    points: Annotated[
        int,
        msgspec.Meta(ge=1, le=MAX_POINTS),
        about("At most this many buckets per series (1 to 2000).", 120),
    ] = 500


@attrs.define
class HistoryQuery(RangeQuery):
    """Parameters of ``GET /api/plugins/{id}/metrics/history``.

    ``labels`` is ``k=v,k2=v2``. Without ``metric``, every series of the instance; without
    any parameter, every series over the last hour.
    """

    metric: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | None,
        about("The metric (left out: every metric of the instance).", "cpu.percent"),
    ] = None
    labels: Annotated[
        str | None, about("Only series with these labels: k=v,k2=v2.", "disk=sda")
    ] = None


@attrs.define
class HistorySeriesOut:
    name: Annotated[str, about("The metric.", "cpu.percent")]
    labels: Annotated[dict[str, str], about("The series' labels.", {"core": "0"})]
    unit: Annotated[str, about("The unit of the values.", "%")]
    resolution: Annotated[float, about("Seconds per bucket.", 60.0)]
    points: Annotated[
        list[tuple[float, float]],
        about(
            "[bucket start, aggregate] pairs, oldest first.",
            [[1795970940.0, 12.5], [1795971000.0, 13.0]],
        ),
    ]


@attrs.define
class HistoryOut:
    plugin_id: Annotated[str, about("The instance.", "system")]
    metric: Annotated[
        str | None,
        about("The metric asked for (null: every metric of the instance).", "cpu.percent"),
    ]
    since: Annotated[float, about("Start of the range, in seconds since the epoch.", 1795967369.15)]
    until: Annotated[float, about("End of the range, in seconds since the epoch.", 1795970969.15)]
    agg: Annotated[str, about("How each bucket's samples were combined.", "avg")]
    series: Annotated[list[HistorySeriesOut], about("Every series that matched.")]


#: Most series one ``GET /api/history`` asks for.
MAX_SERIES = 100


@attrs.define
class ManyHistoryQuery(RangeQuery):
    """Parameters of ``GET /api/history``: :class:`HistoryQuery`'s, for several instances."""

    series: Annotated[
        Annotated[str, msgspec.Meta(min_length=3)],
        about(
            f"Comma-separated instance:metric pairs, at most {MAX_SERIES}.",
            "nas:cpu.percent,router:net.rx_bytes",
        ),
    ] = attrs.field(kw_only=True)


@attrs.define
class ManyHistoryOut:
    since: Annotated[float, about("Start of the range, in seconds since the epoch.", 1795967369.15)]
    until: Annotated[float, about("End of the range, in seconds since the epoch.", 1795970969.15)]
    agg: Annotated[str, about("How each bucket's samples were combined.", "avg")]
    results: Annotated[
        list[HistoryOut],
        about("One answer per instance:metric pair of a known instance, in the order asked."),
    ]
    unknown: Annotated[
        list[str], about("Instances asked for that do not exist (their pairs left out).", [])
    ]


@attrs.define
class ExecutionsQuery:
    """Parameters of ``GET /api/plugins/{id}/executions``."""

    status: Annotated[ExecutionStatus | None, about("Only executions that ended so.", "error")] = (
        None
    )
    limit: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)],
        about("At most this many (1 to 1000).", 50),
    ] = 50
    before: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | None,
        about("Only executions older than this id: the next_before of the previous page.", 1024),
    ] = None


@attrs.define
class ExecutionList:
    plugin_id: Annotated[str, about("The instance.", "system")]
    executions: Annotated[list[Execution], about("Its executions, newest first.")]
    next_before: Annotated[
        int | None, about("The before of the next page (null on the last page).", 974)
    ]


@attrs.define
class HealthHistoryQuery:
    """Parameters of ``GET /api/plugins/{id}/health/history``."""

    limit: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)],
        about("At most this many (1 to 1000).", 100),
    ] = 100
    before: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | None,
        about("Only transitions older than this id: the next_before of the previous page.", 88),
    ] = None


@attrs.define
class HealthHistoryOut:
    plugin_id: Annotated[str, about("The instance.", "system")]
    transitions: Annotated[list[HealthTransition], about("Its health changes, newest first.")]
    next_before: Annotated[
        int | None, about("The before of the next page (null on the last page).", 61)
    ]


@attrs.define
class NodeList:
    nodes: Annotated[list[NodeInfo], about("Every node seen lately, the live ones first.")]


@attrs.define
class CategoryOut:
    name: Annotated[str, about("The category.", "network")]
    count: Annotated[int, about("Its instances.", 4)]


@attrs.define
class CategoryList:
    categories: Annotated[list[CategoryOut], about("Every category, by name.")]


@attrs.define
class HealthCheckOut:
    status: Annotated[Literal["ok", "unavailable"], about("ok when ready, else unavailable.", "ok")]
    live: Annotated[bool, about("The server answers (always true).", True)]
    ready: Annotated[bool, about("The hub can do its work: store, writes and scheduler.", True)]
    store: Annotated[bool, about("The database answers.", True)]
    scheduler: Annotated[bool, about("The scheduler runs.", True)]
    writer: Annotated[bool, about("The store's writes succeed.", True)]
    redis: Annotated[bool, about("The cluster's Redis answers (true for a node alone).", True)] = (
        True
    )
    #: Why the hub is not ready ("" when it is): the failing write, or why the scheduler
    #: stopped.
    reason: Annotated[str, about('Why the hub is not ready ("" when it is).', "")] = ""


AlertState = Literal["pending", "firing", "resolved"]
AlertSeverity = Literal["critical", "warning", "info"]
#: The longest silence the API makes (about 10 years): keeps its end within MAX_TIME.
MAX_SILENCE = 3.2e8


@attrs.define
class AlertsQuery:
    """Filters of ``GET /api/alerts``."""

    state: Annotated[AlertState | None, about("Only alerts in this state.", "firing")] = None
    severity: Annotated[
        AlertSeverity | None, about("Only alerts of this severity.", "critical")
    ] = None


@attrs.define
class AlertList:
    alerts: Annotated[list[AlertInfo], about("The alerts, firing first.")]
    count: Annotated[int, about("How many.", 2)]


@attrs.define
class AlertHistoryQuery:
    """Parameters of ``GET /api/alerts/history``: page with ``before`` (an event id)."""

    rule: Annotated[str | None, about("Only transitions of this rule.", "disk-full")] = None
    limit: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_LIMIT)],
        about("At most this many (1 to 1000).", 100),
    ] = 100
    before: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)] | None,
        about("Only events older than this id: the next_before of the previous page.", 311),
    ] = None


@attrs.define
class AlertHistoryOut:
    events: Annotated[list[AlertEvent], about("The transitions, newest first.")]
    next_before: Annotated[
        int | None, about("The before of the next page (null on the last page).", 211)
    ]


class RuleOut(msgspec.Struct, rename={"for_": "for"}, kw_only=True):
    """A rule (``[alerts.<id>]``, or made through the API), its fields named as in
    homelab.toml; ``source`` says which (a rule of the file is changed in the file)."""

    id: Annotated[str, about("The rule's id.", "disk-full")]
    source: Annotated[
        Literal["file", "api"], about("file (homelab.toml) or api (made through the API).", "api")
    ]
    kind: Annotated[
        Literal["value", "health", "absence"],
        about(
            "value (a metric against a threshold), health (of an instance) or absence (of series).",
            "value",
        ),
    ]
    severity: Annotated[AlertSeverity, about("critical, warning or info.", "critical")]
    metric: Annotated[str, about("The metric the rule watches (a pattern).", "disk.percent")]
    match: Annotated[
        dict[str, str],
        about("Labels a series must have (value or shell-style pattern).", {"mount": "/"}),
    ]
    instances: Annotated[list[str], about("Instances it watches (patterns; empty: all).", ["nas*"])]
    types: Annotated[list[str], about("Plugin types it watches (empty: all).", ["system"])]
    op: Annotated[str, about("How the value is compared with threshold.", ">")]
    threshold: Annotated[float | None, about("The value that makes the condition true.", 90)]
    resolve_threshold: Annotated[
        float | None, about("The value that resolves it (default: threshold).", 85)
    ]
    window: Annotated[float, about("Seconds of samples function reads.", 300)]
    function: Annotated[
        str, about("What is compared: last, avg, min, max or rate over window.", "avg")
    ]
    states: Annotated[
        list[str], about("Health states that make a health rule true.", ["failing", "failed"])
    ]
    of: Annotated[str, about("An absence rule watches series or runs.", "series")]
    for_: Annotated[float, about("Seconds the condition must hold before it fires.", 600)]
    keep_firing_for: Annotated[float, about("Seconds it keeps firing after the condition ends.", 0)]
    labels: Annotated[dict[str, str], about("Labels added to its alerts.", {"team": "home"})]
    summary: Annotated[
        str,
        about(
            "One line about an alert (a template).",
            "{{ instance }}: {{ labels.mount }} is {{ value }}% full",
        ),
    ]
    description: Annotated[str, about("More about an alert (a template).", "Free some space.")]
    notifiers: Annotated[list[str], about("Notifiers its alerts go to (empty: all).", ["phone"])]


_Unset = msgspec.UnsetType
_UNSET = msgspec.UNSET


class RuleIn(msgspec.Struct, rename={"for_": "for"}, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/alerts/rules`` (with ``id``) and ``PUT /api/alerts/rules/{id}``:
    the keys of an ``[alerts.<id>]`` table (docs/alerts.md), checked by the same rules.
    Durations are seconds or text such as ``"5m"``."""

    kind: Annotated[
        Literal["value", "health", "absence"] | _Unset,
        about(
            "value (a metric against a threshold), health (of an instance) or absence (of series).",
            "value",
        ),
    ] = _UNSET
    metric: Annotated[
        str | _Unset, about("The metric the rule watches (a pattern).", "disk.percent")
    ] = _UNSET
    match: Annotated[
        dict[str, str] | _Unset,
        about("Labels a series must have (value or shell-style pattern).", {"mount": "/"}),
    ] = _UNSET
    instances: Annotated[
        list[str] | _Unset, about("Instances it watches (patterns; empty: all).", ["nas*"])
    ] = _UNSET
    types: Annotated[
        list[str] | _Unset, about("Plugin types it watches (empty: all).", ["system"])
    ] = _UNSET
    op: Annotated[
        Literal[">", ">=", "<", "<=", "==", "!="] | _Unset,
        about("How the value is compared with threshold.", ">"),
    ] = _UNSET
    threshold: Annotated[float | _Unset, about("The value that makes the condition true.", 90)] = (
        _UNSET
    )
    resolve_threshold: Annotated[
        float | _Unset, about("The value that resolves it (default: threshold).", 85)
    ] = _UNSET
    window: Annotated[
        float | str | _Unset,
        about('Seconds (or text such as "5m") of samples function reads.', "5m"),
    ] = _UNSET
    function: Annotated[
        Literal["last", "avg", "min", "max", "rate"] | _Unset,
        about("What is compared: last, avg, min, max or rate over window.", "avg"),
    ] = _UNSET
    states: Annotated[
        list[Literal["failing", "degraded", "failed"]] | _Unset,
        about("Health states that make a health rule true.", ["failing", "failed"]),
    ] = _UNSET
    of: Annotated[
        Literal["series", "runs"] | _Unset,
        about("An absence rule watches series or runs.", "series"),
    ] = _UNSET
    for_: Annotated[
        float | str | _Unset,
        about('Seconds (or text such as "5m") the condition must hold before it fires.', "5m"),
    ] = _UNSET
    keep_firing_for: Annotated[
        float | str | _Unset,
        about('Seconds (or text such as "5m") it keeps firing after the condition ends.', 0),
    ] = _UNSET
    severity: Annotated[AlertSeverity | _Unset, about("critical, warning or info.", "critical")] = (
        _UNSET
    )
    labels: Annotated[
        dict[str, str] | _Unset, about("Labels added to its alerts.", {"team": "home"})
    ] = _UNSET
    summary: Annotated[
        str | _Unset,
        about(
            "One line about an alert (a template).",
            "{{ instance }}: {{ labels.mount }} is {{ value }}% full",
        ),
    ] = _UNSET
    description: Annotated[
        str | _Unset, about("More about an alert (a template).", "Free some space.")
    ] = _UNSET
    notifiers: Annotated[
        list[str] | _Unset, about("Notifiers its alerts go to (empty: all).", ["phone"])
    ] = _UNSET

    def table(self) -> dict[str, Any]:
        """The keys given, as an ``[alerts.<id>]`` table would hold them."""
        return {
            ("for" if name == "for_" else name): value
            for name in self.__struct_fields__
            if name != "id" and (value := getattr(self, name)) is not _UNSET
        }


class NewRuleIn(RuleIn, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/alerts/rules``: a rule and its id (a slug, unique)."""

    id: Annotated[str, about("The new rule's id: a slug, unique among the rules.", "disk-full")]


@attrs.define
class RuleList:
    rules: Annotated[list[RuleOut], about("The rules.")]
    count: Annotated[int, about("How many.", 3)]


@attrs.define
class SilencesQuery:
    """Parameters of ``GET /api/silences``."""

    include_expired: Annotated[
        bool, about("Also the silences that have ended since the start.", False)
    ] = False


@attrs.define
class SilenceIn:
    """Body of ``POST /api/silences``: ``ends_at`` or ``duration`` (seconds), not both.

    Times are epoch seconds or text as ``since`` takes it (ISO 8601, ``now``).
    """

    matchers: Annotated[
        dict[str, str],
        about(
            "Label name to value or shell-style pattern (at least one).",
            {"rule": "disk-full", "instance": "nas*"},
        ),
    ]
    ends_at: Annotated[
        float | Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)] | None,
        about(
            "When it ends: epoch seconds or ISO 8601 text (give this or duration).",
            "2026-12-01T20:00:00Z",
        ),
    ] = None
    duration: Annotated[
        Annotated[float, msgspec.Meta(gt=0, le=MAX_SILENCE)] | None,
        about("Seconds it lasts from starts_at (give this or ends_at).", 7200),
    ] = None
    starts_at: Annotated[
        float | Annotated[str, msgspec.Meta(pattern=TIME_PATTERN)] | None,
        about("When it starts: epoch seconds or ISO 8601 text (default now).", None),
    ] = None
    comment: Annotated[
        Annotated[str, msgspec.Meta(max_length=4096)], about("Why it is made.", "disk swap")
    ] = ""
    author: Annotated[
        Annotated[str, msgspec.Meta(max_length=256)], about("Who makes it.", "ana")
    ] = ""


@attrs.define
class SilenceList:
    silences: Annotated[list[Silence], about("The silences.")]
    count: Annotated[int, about("How many.", 1)]


@attrs.define
class NotifierList:
    notifiers: Annotated[list[NotifierInfo], about("The notifiers.")]
    count: Annotated[int, about("How many.", 1)]


@attrs.define
class NotifierTestOut:
    """The answer of ``POST /api/notifiers/{id}/test``: whether the message was delivered."""

    ok: Annotated[bool, about("Whether the message was delivered.", True)]
    error: Annotated[str | None, about("Why not (null if it was).", None)]


#: The description and an example of each path parameter, for the OpenAPI document.
PATH_PARAMETERS: dict[str, tuple[str, str]] = {
    "plugin_id": ("The id of an instance (of the file or of the API).", "system"),
    "type_name": ("The name of an installed plugin type.", "system"),
    "rule_id": ("The id of an alert rule.", "disk-full"),
    "silence_id": ("The id of a silence.", "0b8e5c2a9f1d4c3b"),
    "notifier_id": ("The id of a notifier.", "phone"),
}

#: OpenAPI links: from the answer of an operation that makes something (its id, status)
#: to the operations on what it made, and the parameter the made thing's id fills.
LINKS: dict[tuple[str, str], tuple[str, dict[str, str]]] = {
    ("post_create_plugin", "201"): (
        "plugin_id",
        {
            "GetPlugin": "get_plugin_details",
            "GetPluginStatus": "get_status",
            "ChangePlugin": "patch_change_plugin",
            "DeletePlugin": "delete_delete_plugin",
        },
    ),
    ("post_add_silence", "201"): ("silence_id", {"DeleteSilence": "delete_remove_silence"}),
    ("post_add_alert_rule", "201"): (
        "rule_id",
        {"ReplaceRule": "put_replace_alert_rule", "DeleteRule": "delete_remove_alert_rule"},
    ),
}

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
    StatusPage,
)
