"""The alerting tables of ``homelab.toml``: ``[alerting]``, ``[alerts.<id>]``,
``[notifiers.<id>]``, ``[routes.<id>]`` and ``[maintenance.<id>]``.

Every table is validated when the file is loaded, with errors that name the file, the
table and the field: a comparison that does not exist, a template that does not compile, a
cron expression croniter refuses, a rule or route naming a notifier that no table defines.
Whether a notifier's ``type`` is installed, and whether its options fit that type, is
checked when the hub starts (and by ``homelab check-config``), where the plugins are known.
Durations are seconds, or text with a unit: ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from ..errors import ConfigError
from ..options import build_config, option
from ..plugin import SLUG
from .templates import Template, TemplateError

RuleKind = Literal["value", "health", "absence"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
WindowFunction = Literal["last", "avg", "min", "max", "rate"]
Severity = Literal["critical", "warning", "info"]
#: Severities, most urgent first (a notification carries the highest of its alerts).
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
#: A duration as text: a number and an optional unit (s, m, h, d, w).
DURATION_TEXT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from a number or from text such as ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration (seconds, or text like '5m'), got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := DURATION_TEXT.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected a duration (seconds, or text like '5m'), got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a duration of 0 seconds or more, got {value!r}")
    return seconds


def _patterns(_: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for item in value:
        if not item:
            raise ValueError(f"'{attribute.name}' has an empty pattern", attribute)


def _matchers(_: Any, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    for key, item in value.items():
        if not key:
            raise ValueError(f"'{attribute.name}' has an empty label name", attribute)
        if not isinstance(item, str):
            raise ValueError(f"'{attribute.name}.{key}' must be text, got {item!r}", attribute)


def _template(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    try:
        Template(value)
    except TemplateError as exc:
        raise ValueError(f"'{attribute.name}' is not a valid template: {exc}", attribute) from None


def _no_nan(_: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"'{attribute.name}' must be a finite number, got {value!r}", attribute)


@attrs.define
class AlertingSettings:
    """``[alerting]``: defaults of routing and delivery, and the evaluation clock."""

    evaluation_interval: float = option(
        1.0,
        description="Seconds between checks of time-based conditions (`for`, absence).",
        exclusive_minimum=0,
    )
    group_wait: float = option(
        10.0, description="Seconds a new group waits for more alerts before its first message."
    )
    group_interval: float = option(
        60.0, description="Least seconds between two messages of a group whose alerts changed."
    )
    repeat_interval: float = option(
        4 * 3600.0, description="Seconds after which a group that still fires is sent again."
    )
    send_timeout: float = option(
        10.0,
        description="Seconds one send may take (a notifier's `timeout` overrides it).",
        exclusive_minimum=0,
    )
    retries: int = option(
        5,
        description="Attempts after a failed send before it is given up.",
        minimum=0,
    )
    retry_delay: float = option(
        1.0, description="Seconds before the first retry; doubled for each next one."
    )
    retry_max_delay: float = option(
        60.0, description="Longest wait between two retries, in seconds."
    )
    queue_size: int = option(
        1000,
        description="Messages waiting per notifier; further ones are dropped and counted.",
        minimum=1,
    )
    resolved_retention: float = option(
        900.0, description="Seconds a resolved alert stays listed after it resolved."
    )


@attrs.define
class RuleSettings:
    """One ``[alerts.<id>]`` table: a rule on values, on health, or on absence."""

    id: str
    kind: RuleKind = option("value", description="`value`, `health` or `absence`.")
    metric: str = option("*", description="Metric name, or a pattern (`disk.*`).")
    match: dict[str, str] = option(
        factory=dict,
        description="Label matchers: each label must equal the value (patterns allowed).",
        validator=_matchers,
    )
    instances: list[str] = option(
        factory=lambda: ["*"], description="Instance ids or patterns.", validator=_patterns
    )
    types: list[str] = option(
        factory=lambda: ["*"], description="Plugin types or patterns.", validator=_patterns
    )
    op: Comparison = option(">", description="How the value compares with `threshold`.")
    threshold: float | None = option(
        None, description="The threshold of a value rule.", validator=_no_nan
    )
    resolve_threshold: float | None = option(
        None,
        description="A firing value rule resolves only once the value no longer passes"
        " this threshold (against flapping).",
        validator=_no_nan,
    )
    window: float = option(0.0, description="Seconds of values `function` is computed over.")
    function: WindowFunction = option(
        "last", description="`last`, or `avg`, `min`, `max`, `rate` over `window`."
    )
    states: list[Literal["failing", "degraded", "failed"]] = option(
        factory=lambda: ["failing", "failed"],
        description="Health states that make a health rule's condition true.",
    )
    of: Literal["series", "runs"] = option(
        "series",
        description="What an absence rule watches: samples of a series, or successful runs.",
    )
    for_: float = option(0.0, description="Seconds the condition must hold before firing.")
    keep_firing_for: float = option(
        0.0, description="Seconds a firing alert keeps firing after its condition ends."
    )
    severity: Severity = option("warning", description="`critical`, `warning` or `info`.")
    labels: dict[str, str] = option(
        factory=dict, description="Labels added to the rule's alerts.", validator=_matchers
    )
    summary: str = option(
        "{rule}: {instance} {metric} is {value}",
        description="One-line template ({value}, {labels[name]}, {instance}, ...).",
        validator=_template,
    )
    description: str = option("", description="Longer template.", validator=_template)
    notifiers: list[str] = option(
        factory=list,
        description="Notifier ids to send to; empty: the routes decide.",
        validator=_patterns,
    )


@attrs.define
class NotifierSettings:
    """One ``[notifiers.<id>]`` table: an instance of a notifier type and its options."""

    id: str
    type: str
    timeout: float | None = None
    send_resolved: bool = True
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class RouteSettings:
    """One ``[routes.<id>]`` table: which alerts go to which notifiers, grouped how."""

    id: str
    notifiers: list[str] = option(description="Notifier ids this route sends to.")
    rules: list[str] = option(
        factory=lambda: ["*"], description="Rule ids or patterns.", validator=_patterns
    )
    severities: list[Severity] = option(
        factory=lambda: list(SEVERITIES), description="Severities this route takes."
    )
    match: dict[str, str] = option(
        factory=dict, description="Label matchers (patterns allowed).", validator=_matchers
    )
    group_by: list[str] = option(
        factory=lambda: ["rule"], description="Labels whose values make a group."
    )
    group_wait: float | None = option(None, description="Overrides [alerting] group_wait.")
    group_interval: float | None = option(None, description="Overrides [alerting] group_interval.")
    repeat_interval: float | None = option(
        None, description="Overrides [alerting] repeat_interval."
    )


@attrs.define
class MaintenanceSettings:
    """One ``[maintenance.<id>]`` table: a recurring window in which matching alerts send
    nothing (they still change state and show as silenced)."""

    id: str
    cron: str = option(description="When each window starts (a cron expression).")
    duration: float = option(description="How long each window lasts.")
    match: dict[str, str] = option(
        factory=dict,
        description="Label matchers of the alerts it silences; empty: every alert.",
        validator=_matchers,
    )
    timezone: str = option("UTC", description="The time zone of the cron expression.")
    comment: str = option("", description="Why (shown with silenced alerts).")


@attrs.define
class AlertsConfig:
    """Every alerting table of one file, validated."""

    alerting: AlertingSettings = attrs.field(factory=AlertingSettings)
    rules: dict[str, RuleSettings] = attrs.field(factory=dict)
    notifiers: dict[str, NotifierSettings] = attrs.field(factory=dict)
    routes: dict[str, RouteSettings] = attrs.field(factory=dict)
    maintenance: dict[str, MaintenanceSettings] = attrs.field(factory=dict)


#: The keys of each alerting table that are durations (seconds, or text with a unit).
DURATION_KEYS = {
    "alerting": (
        "evaluation_interval",
        "group_wait",
        "group_interval",
        "repeat_interval",
        "send_timeout",
        "retry_delay",
        "retry_max_delay",
        "resolved_retention",
    ),
    "alerts": ("window", "for", "keep_firing_for"),
    "routes": ("group_wait", "group_interval", "repeat_interval"),
    "maintenance": ("duration",),
    "notifiers": ("timeout",),
}
#: Table names whose keys are ids of tables of one kind each.
SECTIONS = ("alerting", "alerts", "notifiers", "routes", "maintenance")


def _durations(
    body: Mapping[str, Any], keys: tuple[str, ...], where: str | None, table: str
) -> dict[str, Any]:
    result = dict(body)
    for key in keys:
        if key in result and result[key] is not None:
            try:
                result[key] = parse_duration(result[key])
            except ValueError as exc:
                raise ConfigError(str(exc), file=where, table=table, field=key) from None
    return result


def _tables(data: Mapping[str, Any], section: str, where: str) -> dict[str, Mapping[str, Any]]:
    tables = data.get(section) or {}
    if not isinstance(tables, Mapping):
        raise ConfigError(f"must be a table of [{section}.<id>] tables", file=where, table=section)
    for table_id, body in tables.items():
        name = f"{section}.{table_id}"
        if not SLUG.fullmatch(table_id):
            raise ConfigError(
                "id must be a lowercase slug (letters, digits, '_', '-')", file=where, table=name
            )
        if not isinstance(body, Mapping):
            raise ConfigError("must be a table", file=where, table=name)
    return dict(tables)


def parse_rule(
    rule_id: str, body: Mapping[str, Any], *, where: str | None, table: str
) -> RuleSettings:
    """One rule from its table (the file's ``[alerts.<id>]``, or a body of the API)."""
    if "id" in body:
        raise ConfigError(
            "unknown field; the id is the table's name", file=where, table=table, field="id"
        )
    values = _durations(body, DURATION_KEYS["alerts"], where, table)
    if "for_" in values:
        raise ConfigError("unknown field; write 'for'", file=where, table=table, field="for_")
    if "for" in values:
        values["for_"] = values.pop("for")
    try:
        rule = build_config(RuleSettings, {"id": rule_id, **values}, file=where, table=table)
    except ConfigError as exc:
        if exc.field == "for_":
            raise ConfigError(
                exc.reason.replace("for_", "for"), file=where, table=table, field="for"
            ) from None
        raise
    _check_rule(rule, values, where, table)
    return rule


def _check_rule(
    rule: RuleSettings, given: Mapping[str, Any], where: str | None, table: str
) -> None:
    def fail(message: str, field: str) -> None:
        raise ConfigError(message, file=where, table=table, field=field)

    if rule.kind == "value":
        if rule.threshold is None:
            fail("a value rule needs a threshold", "threshold")
        if rule.function != "last" and rule.window <= 0:
            fail(f"function {rule.function!r} needs a window of more than 0 seconds", "window")
        if rule.window > 0 and rule.function == "last":
            fail("a window needs a function: avg, min, max or rate", "function")
        if rule.resolve_threshold is not None and rule.op in ("==", "!="):
            fail(
                f"a resolve_threshold needs a comparison such as '>', not {rule.op!r}",
                "resolve_threshold",
            )
    else:
        for field in ("threshold", "resolve_threshold", "window", "function", "op"):
            if field in given:
                fail(f"only value rules take '{field}'; this is a {rule.kind} rule", field)
    if rule.kind != "health" and "states" in given:
        fail("only health rules take 'states'", "states")
    if rule.kind != "absence" and "of" in given:
        fail("only absence rules take 'of'", "of")
    if rule.kind == "absence" and rule.for_ <= 0:
        fail("an absence rule needs 'for': how long without a sample or a run", "for")
    if rule.kind == "health" and "metric" in given:
        fail("a health rule is about instances, not metrics", "metric")
    if rule.kind == "absence" and rule.of == "runs" and "metric" in given:
        fail("an absence rule of runs is about instances, not metrics", "metric")


def _notifier(notifier_id: str, body: Mapping[str, Any], where: str) -> NotifierSettings:
    table = f"notifiers.{notifier_id}"
    values = _durations(body, DURATION_KEYS["notifiers"], where, table)
    kind = values.pop("type", None)
    if not isinstance(kind, str) or not kind:
        raise ConfigError(
            "expected a notifier type name (webhook, ntfy, email, ...)",
            file=where,
            table=table,
            field="type",
        )
    timeout = values.pop("timeout", None)
    if timeout is not None and timeout <= 0:
        raise ConfigError(
            "expected a positive number of seconds", file=where, table=table, field="timeout"
        )
    send_resolved = values.pop("send_resolved", True)
    if not isinstance(send_resolved, bool):
        raise ConfigError(
            f"expected true or false, got {send_resolved!r}",
            file=where,
            table=table,
            field="send_resolved",
        )
    return NotifierSettings(notifier_id, kind, timeout, send_resolved, values)


def _maintenance(window_id: str, body: Mapping[str, Any], where: str) -> MaintenanceSettings:
    from .silences import MaintenanceWindow

    table = f"maintenance.{window_id}"
    values = _durations(body, DURATION_KEYS["maintenance"], where, table)
    settings = build_config(
        MaintenanceSettings, {"id": window_id, **values}, file=where, table=table
    )
    if settings.duration <= 0:
        raise ConfigError(
            "expected a duration of more than 0 seconds", file=where, table=table, field="duration"
        )
    try:
        MaintenanceWindow.from_settings(settings)
    except ValueError as exc:
        field = "timezone" if "time zone" in str(exc) else "cron"
        raise ConfigError(str(exc), file=where, table=table, field=field) from None
    return settings


def parse_alerts_config(data: Mapping[str, Any], where: str) -> AlertsConfig:
    """Validate the alerting tables of a parsed ``homelab.toml``."""
    alerting = data.get("alerting", {})
    if not isinstance(alerting, Mapping):
        raise ConfigError("must be a table", file=where, table="alerting")
    alerting = _durations(alerting, DURATION_KEYS["alerting"], where, "alerting")
    config = AlertsConfig(
        alerting=build_config(AlertingSettings, alerting, file=where, table="alerting"),
        rules={
            rule_id: parse_rule(rule_id, body, where=where, table=f"alerts.{rule_id}")
            for rule_id, body in _tables(data, "alerts", where).items()
        },
        notifiers={
            notifier_id: _notifier(notifier_id, body, where)
            for notifier_id, body in _tables(data, "notifiers", where).items()
        },
        routes={
            route_id: build_config(
                RouteSettings,
                {
                    "id": route_id,
                    **_durations(body, DURATION_KEYS["routes"], where, f"routes.{route_id}"),
                },
                file=where,
                table=f"routes.{route_id}",
            )
            for route_id, body in _tables(data, "routes", where).items()
        },
        maintenance={
            window_id: _maintenance(window_id, body, where)
            for window_id, body in _tables(data, "maintenance", where).items()
        },
    )
    check_notifier_names(config, where)
    return config


def unknown_notifiers(names: list[str], known: Mapping[str, Any]) -> list[str]:
    """The entries of ``names`` (ids or patterns) that match no notifier id."""
    return [n for n in names if not any(fnmatch.fnmatchcase(k, n) for k in known)]


def check_notifier_names(config: AlertsConfig, where: str) -> None:
    """Every notifier a rule or a route names must have a ``[notifiers.<id>]`` table."""
    defined = ", ".join(sorted(config.notifiers)) or "none"
    for kind, items in (("alerts", config.rules), ("routes", config.routes)):
        for item_id, item in items.items():
            missing = unknown_notifiers(item.notifiers, config.notifiers)
            if missing:
                raise ConfigError(
                    f"unknown notifier {missing[0]!r}; defined notifiers: {defined}",
                    file=where,
                    table=f"{kind}.{item_id}",
                    field="notifiers",
                )
