"""Value types shared by every layer: metrics, health, executions and instance descriptions.

Each domain type is defined once, here. Its JSON form, the API's schemas and the store's
columns are derived from these classes (see :mod:`homelab_core.codec`), never written out
again by hand.
"""

from __future__ import annotations

import enum
import functools
import math
import re
import time
from collections.abc import Mapping
from typing import Annotated, Any

import attrs

from .codec import labels_json, storable_text, to_builtins
from .fielddoc import about

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")


def _labels(value: Mapping[str, Any] | None) -> dict[str, str]:
    if not value:
        return {}
    if type(value) is dict:
        # The common case: text keys, already in order, text values. One pass and a copy.
        previous = ""
        for k, v in value.items():
            if type(k) is not str or type(v) is not str or k < previous:
                break
            previous = k
        else:
            return value.copy()
    return dict(sorted((str(k), str(v)) for k, v in value.items()))


def _value(value: Any) -> float:
    if type(value) is float:
        if value - value == 0.0:  # neither NaN nor infinite
            return value
    elif type(value) is int or type(value) is bool:
        return float(value)
    elif not isinstance(value, int | float):
        raise TypeError(f"metric value must be a number, got {type(value).__name__}")
    result = float(value)
    if math.isnan(result) or math.isinf(result):
        raise ValueError(f"metric value must be finite, got {result}")
    return result


#: Names already found valid: most plugins report the same few hundred names every run.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX = 100_000


def _check_name(_: Any, __: attrs.Attribute[str], value: str) -> None:
    if type(value) is str and value in _VALID_NAMES:
        return
    if not isinstance(value, str):
        raise TypeError(f"metric name must be text, got {type(value).__name__}")
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"metric name {value!r} is invalid: use letters, digits, '_', '.', ':' or '-',"
            " starting with a letter or '_'"
        )
    if len(value) > MAX_NAME:
        raise ValueError(
            f"metric name {value[:40]!r}... is {len(value)} characters long; at most {MAX_NAME}"
        )
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(value)


#: Lengths that fit every supported database (the store's columns) and keep series sane.
MAX_NAME = 255
MAX_UNIT = 32
MAX_DEVICE_CLASS = 32
MAX_LABEL_NAME = 255
MAX_LABEL_VALUE = 4096
#: Units and device classes already found valid (a few dozen in practice).
_VALID_TEXT: set[str] = {""}


def _text_problem(value: Any, limit: int) -> str | None:
    """Why ``value`` cannot be stored as text of at most ``limit`` characters, or None."""
    if not isinstance(value, str):
        return f"must be text, got {type(value).__name__}"
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit}"
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"is not valid UTF-8 text (a lone surrogate, as os.fsdecode gives): {value!r}"
    return None


def _check_text(metric: Metric, field: str, value: Any, limit: int) -> None:
    """Refuse a unit or device class no database can store (the slow path)."""
    problem = _text_problem(value, limit)
    if problem:
        error = ValueError if isinstance(value, str) else TypeError
        raise error(f"metric {metric.name!r}: {field} {problem}")
    if len(_VALID_TEXT) < 10_000:
        _VALID_TEXT.add(value)


def _check_labels(metric: Metric) -> None:
    for key, text in metric.labels.items():
        if (
            key.isascii()
            and text.isascii()
            and len(key) <= MAX_LABEL_NAME
            and len(text) <= MAX_LABEL_VALUE
            and "\x00" not in key
            and "\x00" not in text
        ):
            continue
        problem = _text_problem(key, MAX_LABEL_NAME)
        if problem:
            raise ValueError(f"metric {metric.name!r}: label name {key!r} {problem}")
        problem = _text_problem(text, MAX_LABEL_VALUE)
        if problem:
            raise ValueError(f"metric {metric.name!r}: label {key!r} {problem}")


def _check_timestamp(metric: Metric, stamp: Any) -> None:
    """Refuse a timestamp that is not a finite number; store an int as a float."""
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        raise TypeError(
            f"metric {metric.name!r}: timestamp must be a number of seconds since the"
            f" epoch, got {type(stamp).__name__}"
        )
    if not math.isfinite(stamp):
        raise ValueError(f"metric {metric.name!r}: timestamp must be a finite number")
    object.__setattr__(metric, "timestamp", float(stamp))


class MetricKind(enum.StrEnum):
    """Whether a metric is a level (gauge) or an ever-growing total (counter)."""

    GAUGE = "gauge"
    COUNTER = "counter"


def _kind(value: Any) -> MetricKind:
    return value if type(value) is MetricKind else MetricKind(value)


@attrs.frozen
class Metric:
    """One measured value: ``name`` + ``labels`` identify a series within a plugin instance.

    ``timestamp`` is seconds since the epoch; left out, it is the time of the collection.
    Every field is checked here, where the plugin makes the metric, so that nothing
    reaches the store that a supported database would refuse: a finite value and
    timestamp; text that is valid UTF-8 without NUL characters; a name of at most 255
    characters, a unit and a device class of at most 32, label names of at most 255 and
    values of at most 4096. A bad field raises ``TypeError`` or ``ValueError`` naming the
    metric, which makes the run an error of its own instance.
    """

    name: Annotated[
        str,
        about(
            "The metric's name; with the labels, it names a series of the instance.", "cpu.percent"
        ),
    ] = attrs.field(validator=_check_name)
    value: Annotated[float, about("The measured value (finite).", 12.5)] = attrs.field(
        converter=_value
    )
    unit: Annotated[str, about('The unit of the value ("" if none).', "%")] = ""
    labels: Annotated[
        dict[str, str], about("The labels of the series (name to value).", {"core": "0"})
    ] = attrs.field(factory=dict, converter=_labels, hash=False)
    timestamp: Annotated[
        float | None, about("When it was measured, in seconds since the epoch.", 1795970969.15)
    ] = None
    kind: Annotated[
        MetricKind, about("gauge (a level) or counter (an ever-growing total).", "gauge")
    ] = attrs.field(default=MetricKind.GAUGE, converter=_kind)
    device_class: Annotated[
        str | None,
        about(
            "What the value measures, as Home Assistant's device classes say, if known.",
            "temperature",
        ),
    ] = None

    def __attrs_post_init__(self) -> None:
        # The common case costs a few comparisons: known units, ASCII labels, no time.
        unit, device_class = self.unit, self.device_class
        if type(unit) is not str or unit not in _VALID_TEXT:
            _check_text(self, "unit", unit, MAX_UNIT)
        if device_class is not None and (
            type(device_class) is not str or device_class not in _VALID_TEXT
        ):
            _check_text(self, "device_class", device_class, MAX_DEVICE_CLASS)
        if self.labels:
            _check_labels(self)
        stamp = self.timestamp
        if stamp is not None and not (type(stamp) is float and stamp - stamp == 0.0):
            _check_timestamp(self, stamp)

    @property
    def series_key(self) -> str:
        """A stable text key of the series: the name, then the sorted labels."""
        return series_key(self.name, self.labels)

    def with_timestamp(self, timestamp: float) -> Metric:
        """A copy stamped with ``timestamp``.

        Cheaper than :func:`attrs.evolve`: the fields are already valid, so no converter
        or validator runs again (the collection path stamps every metric that has no time).
        """
        new: Metric = object.__new__(Metric)
        for field in _METRIC_FIELDS:
            object.__setattr__(new, field, getattr(self, field))
        object.__setattr__(new, "timestamp", float(timestamp))
        return new

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of this metric."""
        return to_builtins(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Metric:
        """Rebuild a metric from :meth:`to_dict` output."""
        return cls(**data)


_METRIC_FIELDS = tuple(a.name for a in attrs.fields(Metric) if a.name != "timestamp")


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """The key of one series of an instance: the name, then its labels as sorted JSON.

    The labels are written as :func:`~homelab_core.codec.labels_json` writes them for the
    store, so the key is unambiguous whatever characters labels contain. Keys are
    remembered (a bounded cache), since the same series come back every collection.
    """
    if not labels:
        return name
    return _series_key(name, tuple(labels.items()))


@functools.lru_cache(maxsize=65_536)
def _series_key(name: str, items: tuple[tuple[str, str], ...]) -> str:
    return name + labels_json(dict(items))


class HealthState(enum.StrEnum):
    """The health of a plugin instance."""

    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"
    #: Setup failed permanently (:class:`~homelab_core.errors.SetupFailed`); not retried.
    FAILED = "failed"
    DISABLED = "disabled"
    UNKNOWN = "unknown"


@attrs.frozen
class HealthReport:
    """What a plugin's ``health()`` returns: a state and a sentence a person understands."""

    state: HealthState = attrs.field(converter=HealthState)
    message: str = attrs.field(default="", converter=storable_text)


@attrs.frozen
class Health:
    """Health of one instance as the framework tracks it."""

    state: Annotated[HealthState, about("The instance's health.", "ok")] = HealthState.UNKNOWN
    message: Annotated[
        str, about("A sentence about the state, for a person.", "200 OK in 41 ms")
    ] = ""
    since: Annotated[
        float, about("When the state began, in seconds since the epoch.", 1795970969.15)
    ] = attrs.field(factory=time.time)
    last_success: Annotated[
        float | None, about("When the last run succeeded (null before the first).", 1795970970.15)
    ] = None
    last_error: Annotated[
        str | None, about("The error of the last failed run (null if none).", "connection refused")
    ] = None
    last_error_at: Annotated[
        float | None, about("When the last run failed (null if none has).", 1795970900.0)
    ] = None
    consecutive_failures: Annotated[int, about("Failed runs since the last success.", 0)] = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of this health."""
        return to_builtins(self)  # type: ignore[no-any-return]


class ExecutionStatus(enum.StrEnum):
    """How one scheduled or manual run ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


@attrs.frozen
class WorkerInfo:
    """A worker process name of the hub's isolated instances, and its figures (those of
    its live process, and the counts of every process started under that name)."""

    name: Annotated[str, about("An instance id, or the worker = name a group shares.", "nas")]
    pid: Annotated[int | None, about("The live process's id (null: none runs).", 4242)]
    starts: Annotated[int, about("Processes started under this name.", 1)]
    losses: Annotated[
        int,
        about("Processes that ended in use: crashed, killed, over memory, timed out.", 0),
    ]
    cpu_seconds: Annotated[float, about("CPU seconds spent in calls of plugin methods.", 1.5)]
    rss: Annotated[int, about("Resident memory after the last call, in bytes.", 31457280)]
    peak_rss: Annotated[int, about("Peak resident memory of the live process, in bytes.", 1)]


@attrs.frozen
class NodeInfo:
    """A node of the cluster, as its heartbeats describe it."""

    name: Annotated[str, about("The node's name ([node] name).", "nas")]
    version: Annotated[str, about("The version of Homelab Core it runs.", "0.1.0")]
    started_at: Annotated[float, about("When it started, in epoch seconds.", 1795970969.15)]
    heartbeat_at: Annotated[
        float, about("Its last heartbeat, in epoch seconds (Redis' clock).", 1795971000.5)
    ]
    alive: Annotated[bool, about("Whether its heartbeats are recent (three periods).", True)]
    instances: Annotated[
        list[str], about("The instances it runs (pinned there, or leased).", ["nas-disks"])
    ]
    duties: Annotated[
        list[str],
        about("The cluster's shared work it does (maintenance: rollups, retention).", []),
    ] = attrs.field(factory=list)


@attrs.frozen
class HealthTransition:
    """A stored change of an instance's health state."""

    id: Annotated[int, about("The stored record's id; the health history's before cursor.", 88)]
    ts: Annotated[
        float, about("When the state changed, in seconds since the epoch.", 1795970969.15)
    ]
    old_state: Annotated[str, about("The state before.", "ok")]
    new_state: Annotated[str, about("The state after.", "failing")]
    message: Annotated[str, about("The health message that came with it.", "connection refused")]


@attrs.frozen
class Execution:
    """The record of one run of a plugin instance (or of a run that was skipped)."""

    instance_id: Annotated[str, about("The instance that ran.", "system")]
    started_at: Annotated[
        float, about("When the run started, in seconds since the epoch.", 1795970969.15)
    ]
    duration: Annotated[float, about("Seconds the run took.", 0.042)]
    status: Annotated[ExecutionStatus, about("How the run ended.", "ok")] = attrs.field(
        converter=ExecutionStatus
    )
    error: Annotated[str | None, about("Why the run failed (null if it did not).", None)] = None
    metric_count: Annotated[int, about("Metrics the run returned.", 12)] = 0
    trigger: Annotated[str, about("What started the run: schedule or manual.", "schedule")] = (
        "schedule"
    )
    lag: Annotated[float, about("Seconds the run started after its scheduled time.", 0.003)] = 0.0
    node: Annotated[str | None, about("The node that ran it (null: not recorded).", "nas")] = None
    fence: Annotated[
        int | None,
        about("The fencing token of the node's lease on the instance (null: not leased).", 17),
    ] = None
    cpu: Annotated[
        float | None,
        about(
            "CPU seconds its worker process spent on the run (null: the run was in process).",
            0.004,
        ),
    ] = None
    peak_rss: Annotated[
        int | None,
        about(
            "Peak resident memory of its worker process, in bytes (null: in process).",
            31457280,
        ),
    ] = None
    #: Row id once stored; used as the ``before`` cursor when paging.
    id: Annotated[
        int | None,
        about(
            "The stored record's id (null before it is stored); the executions' before cursor.",
            1024,
        ),
    ] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of this execution."""
        return to_builtins(self)  # type: ignore[no-any-return]


#: The stored columns of an execution, in order: every field but the row id.
EXECUTION_COLUMNS = tuple(f.name for f in attrs.fields(Execution) if f.name != "id")


@attrs.define
class RunStats:
    """Counters of one instance since the scheduler started."""

    runs: Annotated[
        int, about("Runs since the scheduler started (skipped ones not counted).", 120)
    ] = 0
    ok: Annotated[int, about("Runs that succeeded.", 118)] = 0
    errors: Annotated[int, about("Runs that raised an error.", 1)] = 0
    timeouts: Annotated[int, about("Runs that took longer than the timeout.", 1)] = 0
    skipped: Annotated[
        int, about("Runs skipped as late or as the previous one was still running.", 0)
    ] = 0
    last_execution: Annotated[
        Execution | None, about("The last execution (null before the first).")
    ] = None
    #: Distinct series the instance has brought (counted while its ``max_series`` is on).
    series: Annotated[
        int,
        about("Distinct series the instance has brought (counted while its max_series is on).", 14),
    ] = 0
    #: Samples of runs refused for returning more than ``max_samples_per_run``.
    samples_over_run_limit: Annotated[
        int, about("Samples of runs refused for returning more than max_samples_per_run.", 0)
    ] = 0
    #: Samples of new series dropped because the instance had ``max_series`` already.
    samples_over_series_limit: Annotated[
        int, about("Samples of new series dropped because the instance had max_series series.", 0)
    ] = 0

    def count(self, execution: Execution) -> None:
        """Count one execution."""
        self.last_execution = execution
        status = execution.status
        if status is ExecutionStatus.SKIPPED:
            self.skipped += 1
            return
        self.runs += 1
        if status is ExecutionStatus.OK:
            self.ok += 1
        elif status is ExecutionStatus.TIMEOUT:
            self.timeouts += 1
        else:
            self.errors += 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the counters."""
        return to_builtins(self)  # type: ignore[no-any-return]


class InstanceState(enum.StrEnum):
    """Where an instance is in its life cycle (the transitions: :mod:`homelab_core.lifecycle`).

    ``enabled`` is ``state is not DISABLED``: the life cycle is the one owner of it while a
    hub runs (the store keeps it across restarts).
    """

    #: Enabled, but not running (the scheduler is not running, or has stopped it).
    STOPPED = "stopped"
    #: ``setup()`` is being called.
    SETTING_UP = "setting_up"
    #: ``setup()`` failed or said it was not ready; waiting to try again.
    SETUP_RETRY = "setup_retry"
    #: Set up; runs on its schedule.
    READY = "ready"
    #: Switched off by its owner; not run.
    DISABLED = "disabled"
    #: ``setup()`` failed permanently; not retried until disabled and enabled again.
    FAILED = "failed"


@attrs.frozen
class TypeInfo:
    """An installed plugin type's metadata."""

    name: Annotated[str, about("The type's name, the type of an instance table.", "http")]
    title: Annotated[str, about("A short name for people.", "HTTP check")]
    category: Annotated[
        str, about("The category the type's instances are listed under.", "network")
    ]
    description: Annotated[str, about("What the type measures.", "Checks that a URL answers.")]
    version: Annotated[str, about("The version of the plugin.", "1.0.0")]
    default_interval: Annotated[
        float, about("Seconds between runs when an instance does not say.", 60.0)
    ]


@attrs.frozen
class InstanceInfo:
    """A configured plugin instance as the hub sees it (config with secrets redacted)."""

    id: Annotated[str, about("The instance's id (a slug).", "nas-web")]
    type: Annotated[str, about("The plugin type (GET /api/types).", "http")]
    title: Annotated[str, about("The type's title.", "HTTP check")]
    category: Annotated[str, about("The type's category.", "network")]
    enabled: Annotated[
        bool, about("Whether the instance runs (stored; kept across restarts).", True)
    ]
    state: Annotated[InstanceState, about("Where the instance is in its life cycle.", "ready")]
    interval: Annotated[float, about("Seconds between runs.", 60.0)]
    timeout: Annotated[float, about("Seconds one run may take.", 10.0)]
    config: Annotated[
        dict[str, Any],
        about(
            "The instance's options, secrets shown as **********.",
            {"url": "https://nas.lan/", "token": "**********"},
        ),
    ]
    health: Annotated[Health, about("The instance's health.")]
    #: Who owns the instance: ``file`` (homelab.toml) or ``api`` (created through the API).
    source: Annotated[
        str,
        about(
            "Who owns the instance: file (homelab.toml) or api (created through the API).", "file"
        ),
    ] = "file"
    node: Annotated[
        str | None,
        about("The node it is pinned to (null: any node of the cluster, under a lease).", None),
    ] = None
    running_on: Annotated[
        str | None,
        about("The node that runs it now, as far as this node knows (null: none).", "nas"),
    ] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of the instance."""
        return to_builtins(self)  # type: ignore[no-any-return]


@attrs.frozen
class Point:
    """One point of a history series: a bucket start and its aggregate."""

    timestamp: float
    value: float


@attrs.frozen
class HistorySeries:
    """The history of one series over a time range."""

    name: str
    labels: dict[str, str]
    unit: str
    points: list[Point]
    resolution: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of this series."""
        return {
            "name": self.name,
            "labels": self.labels,
            "unit": self.unit,
            "resolution": self.resolution,
            "points": [[p.timestamp, p.value] for p in self.points],
        }


@attrs.frozen
class Summary:
    """The figures a dashboard header shows, as :meth:`Hub.summary` computes them."""

    instances: Annotated[int, about("Configured instances.", 12)]
    enabled: Annotated[int, about("Enabled instances.", 11)]
    by_status: Annotated[
        dict[str, int],
        about("Instances per health state.", {"ok": 10, "failing": 1, "disabled": 1}),
    ]
    runs_last_hour: Annotated[int, about("Runs in the last hour.", 720)]
    failures_last_hour: Annotated[int, about("Runs that failed or timed out in the last hour.", 3)]
    samples_stored: Annotated[int, about("Samples written to the store since start.", 86400)]
    samples_dropped: Annotated[
        int, about("Samples dropped since start because the write queue was full.", 0)
    ]
    uptime: Annotated[float, about("Seconds since the hub started.", 3600.5)]


@attrs.frozen
class Readiness:
    """Whether a hub can do its work: the store answers, its writes succeed (none has
    failed since the last that succeeded) and the scheduler runs.

    ``write_error`` is the database's reason while writes fail.
    """

    store_answers: bool
    scheduler_runs: bool
    writes_succeed: bool = True
    write_error: str | None = None
    #: Why the scheduler stopped, if it did.
    scheduler_error: str = ""
    #: In a cluster: whether its Redis answers (the heartbeats, the bus, the cache).
    redis_answers: bool = True

    @property
    def reason(self) -> str:
        """Why the hub is not ready, as one line ("" when it is)."""
        reasons = []
        if not self.store_answers:
            reasons.append("the store does not answer")
        if not self.writes_succeed:
            reasons.append(
                f"writes fail: {self.write_error}" if self.write_error else "writes fail"
            )
        if not self.scheduler_runs:
            why = f": {self.scheduler_error}" if self.scheduler_error else ""
            reasons.append(f"the scheduler is not running{why}")
        if not self.redis_answers:
            reasons.append(
                "the cluster's Redis does not answer (pinned instances run on; leased ones"
                " stopped before their leases ran out)"
            )
        return "; ".join(reasons)

    @property
    def ready(self) -> bool:
        """Every part works."""
        return (
            self.store_answers
            and self.writes_succeed
            and self.scheduler_runs
            and self.redis_answers
        )
