"""The REST API blueprint: the paths of docs/architecture.md's web API, plus run-now and health.

Every view reaches the core through :class:`~homelab_core.Hub` only.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import msgspec
from quart import Blueprint, Response, request
from quart_schema import (
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from ..alerts.config import RuleSettings, parse_duration
from ..alerts.silences import Silence
from ..errors import ConfigError, NotFoundError
from ..model import Execution, Health, HistorySeries, InstanceInfo, Summary
from ..status import StatusPage
from . import schemas as s
from .auth import check_request, needs_token
from .dashboard import ENDPOINTS as DASHBOARD_ENDPOINTS
from .errors import ApiError, register_error_handlers
from .origins import check_not_form

if TYPE_CHECKING:
    from ..hub import Hub
    from .extension import HomelabWeb

_F = TypeVar("_F", bound=Callable[..., Any])

#: Latest time the API accepts (year 5138): keeps bucket arithmetic within 64 bits.
MAX_TIME = 1e11
#: Endpoints that never need the token.
PUBLIC_ENDPOINTS = frozenset(
    {
        "homelab.docs",
        "homelab.docs_static",
        # The dashboard's pages and assets (the status page: a 404 unless enabled).
        *DASHBOARD_ENDPOINTS,
        # The status page's figures: a 404 unless [status_page] enabled.
        "homelab.status_figures",
    }
)
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, *, name: str, now: float) -> float:
    """Seconds since the epoch from ISO 8601, epoch seconds, ``now`` or ``-1h``-style text."""
    value = text.strip()
    if value == "now":
        return now
    relative = _RELATIVE.match(value)
    if relative:
        return _in_range(now - float(relative.group(1)) * _UNITS[relative.group(2)], text, name)
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return _in_range(number, text, name)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"{name}: {text!r} is not a time; use {s.TIME_FORMS}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _in_range(moment.timestamp(), text, name)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _exists(h: Hub, instance_id: str) -> bool:
    """Whether the hub has the instance (without describing every instance it has)."""
    try:
        h.type_info(instance_id)
    except NotFoundError:
        return False
    return True


def parse_range(query: s.RangeQuery) -> tuple[float, float, float | None]:
    """``since``, ``until`` (now if left out) and ``step`` of a history query, checked."""
    now = time.time()
    since = parse_time(query.since, name="since", now=now)
    until = parse_time(query.until, name="until", now=now) if query.until is not None else now
    step = parse_step(query.step)
    if until <= since:
        raise ApiError(400, "invalid_request", "until must be later than since")
    return since, until, step


def parse_series(text: str) -> list[tuple[str, str]]:
    """The (instance, metric) pairs of ``GET /api/history``'s ``series``."""
    pairs = []
    for item in text.split(","):
        plugin_id, sep, metric = item.strip().partition(":")
        if not sep or not plugin_id or not metric:
            raise ApiError(
                400,
                "invalid_request",
                f"series: {item.strip()[:100]!r} is not instance:metric (such as nas:cpu.percent)",
            )
        pairs.append((plugin_id, metric))
    if len(pairs) > s.MAX_SERIES:
        raise ApiError(
            400,
            "invalid_request",
            f"series: {len(pairs)} pairs; one request may ask for at most {s.MAX_SERIES}",
        )
    return pairs


def history_out(
    plugin_id: str,
    metric: str | None,
    since: float,
    until: float,
    agg: str,
    series: list[HistorySeries],
) -> s.HistoryOut:
    """The API's form of the store's answer to a history query."""
    return s.HistoryOut(
        plugin_id=plugin_id,
        metric=metric,
        since=since,
        until=until,
        agg=agg,
        series=[
            s.HistorySeriesOut(
                name=x.name,
                labels=x.labels,
                unit=x.unit,
                resolution=x.resolution,
                points=[(p.timestamp, p.value) for p in x.points],
            )
            for x in series
        ],
    )


def parse_step(text: str | None, *, name: str = "step") -> float | None:
    """Seconds from ``300`` or ``10s``/``5m``/``1h``/``1d``/``1w`` text (None if absent)."""
    if text is None:
        return None
    try:
        seconds: float | None = parse_duration(float(text) if _is_number(text) else text)
    except ValueError:
        seconds = None
    if seconds is None or seconds <= 0:
        raise ApiError(
            400,
            "invalid_request",
            f"{name}: {text!r} is not a positive duration; use {s.STEP_FORMS}",
        )
    if seconds > s.MAX_STEP:
        raise ApiError(
            400, "invalid_request", f"{name}: {text!r} is longer than {s.MAX_STEP:.0f} seconds"
        )
    return seconds


def _in_range(value: float, text: str, name: str) -> float:
    if not 0 <= value <= MAX_TIME:
        raise ApiError(
            400, "invalid_request", f"{name}: {text!r} is outside the times the API accepts"
        )
    return value


def parse_labels(text: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` as a mapping."""
    if not text:
        return {}
    labels = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ApiError(400, "invalid_request", f"labels: {part!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def _moment(value: float | str | None, name: str, now: float) -> float | None:
    """A time of a request body (None if absent): see :func:`_body_time`."""
    return None if value is None else _body_time(value, name, now)


def _body_time(value: float | str, name: str, now: float) -> float:
    """A time of a request body: epoch seconds, or text as :func:`parse_time` reads it."""
    if isinstance(value, str):
        return parse_time(value, name=name, now=now)
    if not math.isfinite(value):
        raise ApiError(400, "invalid_request", f"{name}: {value!r} is not a time")
    return _in_range(value, str(value), name)


def rule_out(rule: RuleSettings, source: str) -> s.RuleOut:
    """A rule's settings as the API shows them."""
    fields = {f.name: getattr(rule, f.name) for f in attrs.fields(RuleSettings)}
    return s.RuleOut(**fields, source=source)  # type: ignore[arg-type]


_S = TypeVar("_S")


async def strict_body(kind: type[_S]) -> _S:
    """The request's JSON body as ``kind``, strictly: quart-schema converts leniently
    (``0`` for false, ``"30"`` for 30), and a change of config must get what it says."""
    raw = await request.get_json(silent=True)
    try:
        return msgspec.convert(raw, kind, strict=True)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None


def errors(*codes: int) -> Callable[[_F], _F]:
    """Document the JSON error responses a route can give, for the OpenAPI document."""

    def decorate(func: _F) -> _F:
        for code in codes:
            func = document_response(s.ErrorBody, code)(func)
        return func

    return decorate


def create_blueprint(web: HomelabWeb) -> Blueprint:
    """The API blueprint of one :class:`HomelabWeb` extension."""
    bp = Blueprint("homelab", __name__)
    register_error_handlers(bp)

    def hub() -> Hub:
        return web.hub

    @bp.before_request
    async def guard() -> None:
        """The checks of every request: its host, then a change's origin, the token, and
        that a POST is not one a form of another site could send (see web/origins.py)."""
        if web.host_check is not None:
            web.check_host(request.headers.get("Host"))
        server = web.settings.server
        method = request.method
        write = method not in ("GET", "HEAD", "OPTIONS")
        if not write and not needs_token(server, write=False):
            return  # nothing to check: skip the endpoint and header lookups (a tenth of a
            # cached latest-metrics read)
        headers = request.headers
        if write:
            web.check_origin(headers.get("Origin"), headers.get("Host"))
        # The docs page is static and describes a public document: a browser opening it
        # cannot send a bearer token, so it stays open even with auth = "all".
        if needs_token(server, write=write) and request.endpoint not in PUBLIC_ENDPOINTS:
            check_request(server, headers.get("Authorization"), write=write)
        if method == "POST":
            try:
                check_not_form(request.mimetype, headers.get("Authorization"))
            except ApiError as refused:
                web.refusals.note(refused)
                raise

    @bp.get("/api/plugins")
    @errors(400, 401, 403, 503)
    @validate_querystring(s.PluginsQuery)
    @validate_response(s.PluginList)
    async def list_plugins(query_args: s.PluginsQuery) -> s.PluginList:
        """Configured plugin instances, optionally filtered."""
        plugins = [
            i
            for i in hub().instances()
            if (query_args.category is None or i.category == query_args.category)
            and (query_args.enabled is None or i.enabled == query_args.enabled)
            and (query_args.status is None or i.health.state is query_args.status)
        ]
        return s.PluginList(plugins=plugins, count=len(plugins))

    @bp.get("/api/plugins/categories/list")
    @errors(401, 403, 503)
    @validate_response(s.CategoryList)
    async def categories() -> s.CategoryList:
        """Categories of the configured instances, with how many each has."""
        counts: dict[str, int] = {}
        for info in hub().instances():
            counts[info.category] = counts.get(info.category, 0) + 1
        return s.CategoryList([s.CategoryOut(name, n) for name, n in sorted(counts.items())])

    @bp.get("/api/plugins/stats/summary")
    @errors(401, 403, 503)
    @validate_response(Summary)
    async def summary() -> Summary:
        """The figures a dashboard header shows."""
        return await hub().summary()

    @bp.get("/api/plugins/<plugin_id>")
    @errors(404, 401, 403, 503)
    @validate_response(s.PluginDetails)
    async def plugin_details(plugin_id: str) -> s.PluginDetails:
        """One instance: its type, config (secrets redacted), config schema and run counts."""
        h = hub()
        return s.PluginDetails(
            plugin=h.instance(plugin_id),
            type=h.type_info(plugin_id),
            config_schema=h.config_schema(plugin_id),
            stats=h.stats(plugin_id),
        )

    @bp.post("/api/plugins")
    @errors(400, 401, 403, 409, 415, 503)
    @validate_request(s.InstanceIn)
    @validate_response(InstanceInfo, 201)
    async def create_plugin(data: s.InstanceIn) -> tuple[InstanceInfo, int]:
        """Create an instance owned by the store (``source`` ``api``): checked by the rules
        of a ``[plugins.<id>]`` table, with the same messages (a 400 names the field and
        the accepted values), stored, restored at every start, and started at once.
        Secrets are accepted and stored; no answer returns them. An id that an instance of
        the file or of the API has is a 409."""
        data = await strict_body(s.InstanceIn)
        return await hub().create_instance(data.id, data.table()), 201

    @bp.patch("/api/plugins/<plugin_id>")
    @errors(400, 404, 401, 403, 409, 415, 503)
    @validate_request(s.InstanceChangeIn)
    @validate_response(InstanceInfo)
    async def change_plugin(plugin_id: str, data: s.InstanceChangeIn) -> InstanceInfo:
        """Change an instance of the API (only what the body names); it restarts with its
        new options, other instances are not touched. An instance of the file is a 409:
        edit the file (and reload)."""
        data = await strict_body(s.InstanceChangeIn)
        return await hub().update_instance(plugin_id, data.changes())

    @bp.delete("/api/plugins/<plugin_id>")
    @errors(400, 404, 401, 403, 409, 503)
    @validate_querystring(s.DeleteQuery)
    @validate_response(InstanceInfo)
    async def delete_plugin(plugin_id: str, query_args: s.DeleteQuery) -> InstanceInfo:
        """Stop and delete an instance of the API; its history stays unless
        ``purge=true``. Answers the instance as it was."""
        h = hub()
        info = h.instance(plugin_id)
        await h.delete_instance(plugin_id, purge=query_args.purge)
        return info

    @bp.post("/api/reload")
    @errors(400, 401, 403, 409, 415, 503)
    @validate_response(s.ReloadOut)
    async def reload() -> s.ReloadOut:
        """Read homelab.toml again and apply the difference to its instances: new ones
        start, removed ones stop, changed ones restart, the others run on. A file with any
        error is a 400 with ``homelab check-config``'s message, and nothing changes;
        sections that cannot change while running are listed in ``restart_needed``."""
        try:
            done = await hub().reload()
        except ConfigError as exc:
            raise ApiError(400, "invalid_config", str(exc)) from None
        return s.ReloadOut(
            done.added, done.removed, done.changed, done.restart_needed, done.describe()
        )

    @bp.get("/api/types")
    @errors(401, 403, 503)
    @validate_response(s.TypeList)
    async def list_types() -> s.TypeList:
        """Every installed plugin type with the JSON Schema of its options (types,
        defaults, ranges, enums, descriptions; secrets are ``writeOnly``)."""
        found = [
            s.TypeDetails(info, source, schema) for info, source, schema in hub().plugin_types()
        ]
        return s.TypeList(found, len(found))

    @bp.get("/api/types/<type_name>")
    @errors(404, 401, 403, 503)
    @validate_response(s.TypeDetails)
    async def type_details(type_name: str) -> s.TypeDetails:
        """One installed plugin type and the JSON Schema of its options."""
        info, source, schema = hub().plugin_type_details(type_name)
        return s.TypeDetails(info, source, schema)

    @bp.post("/api/plugins/<plugin_id>/enable")
    @errors(400, 404, 401, 403, 415, 503)
    @validate_request(s.EnableIn)
    @validate_response(InstanceInfo)
    async def enable(plugin_id: str, data: s.EnableIn) -> InstanceInfo:
        """Enable or disable an instance; the choice is stored and acts at once."""
        # quart-schema converts bodies leniently ("false" -> False); insist on a boolean.
        raw = await request.get_json(silent=True)
        if not isinstance(raw, dict) or not isinstance(raw.get("enabled"), bool):
            raise ApiError(400, "invalid_request", "enabled must be true or false")
        return await hub().set_enabled(plugin_id, data.enabled)

    @bp.post("/api/plugins/<plugin_id>/run")
    @errors(404, 409, 401, 403, 415, 503)
    @validate_response(Execution)
    async def run_now(plugin_id: str) -> Execution:
        """Run an instance now and return the execution.

        There is no body to send, but the request needs ``Content-Type: application/json``
        (or a bearer token), like every change: what a form of another site could send is
        refused with 415.
        """
        return await hub().run_now(plugin_id)

    @bp.get("/api/plugins/<plugin_id>/status")
    @errors(404, 401, 403, 503)
    @validate_response(Health)
    async def status(plugin_id: str) -> Health:
        """An instance's health."""
        return hub().health(plugin_id)

    @bp.get("/api/plugins/<plugin_id>/metrics")
    @errors(404, 401, 403, 503)
    @document_response(s.MetricList)
    async def latest(plugin_id: str) -> Response:
        """The latest value of every series of an instance."""
        # Encoded once per change of the values, not per request (see web/latest.py).
        body = await web.latest.body(plugin_id)
        return Response(body, content_type="application/json")

    @bp.get("/api/plugins/<plugin_id>/metrics/history")
    @errors(400, 404, 401, 403, 503)
    @validate_querystring(s.HistoryQuery)
    @validate_response(s.HistoryOut)
    async def history(plugin_id: str, query_args: s.HistoryQuery) -> s.HistoryOut:
        """Bucketed history of one metric of an instance, or of all of its metrics.

        With no parameter at all, every series of the instance over the last hour."""
        q = query_args
        h = hub()
        h.instance(plugin_id)
        since, until, step = parse_range(q)
        series = await h.history(
            plugin_id,
            q.metric,
            since=since,
            until=until,
            step=step,
            agg=q.agg,
            labels=parse_labels(q.labels),
            max_points=q.points,
        )
        return history_out(plugin_id, q.metric, since, until, q.agg, series)

    @bp.get("/api/history")
    @errors(400, 404, 401, 403, 503)
    @validate_querystring(s.ManyHistoryQuery)
    @validate_response(s.ManyHistoryOut)
    async def many_histories(query_args: s.ManyHistoryQuery) -> s.ManyHistoryOut:
        """Bucketed history of several instances' metrics in one request.

        ``series`` names instance:metric pairs (``nas:cpu.percent,router:load.1m``); each
        gets the answer ``GET /api/plugins/{id}/metrics/history`` would give for that
        metric and these parameters. A page that draws many small charts (the
        dashboard's sparklines) asks once instead of once per chart. Instances that do not
        exist (any more) are listed in ``unknown``, their pairs left out: one deleted
        while a page asked does not fail the others."""
        q = query_args
        h = hub()
        pairs = parse_series(q.series)
        asked = {plugin_id for plugin_id, _ in pairs}
        known = {plugin_id for plugin_id in asked if _exists(h, plugin_id)}
        unknown = sorted(asked - known)
        since, until, step = parse_range(q)
        results = []
        for plugin_id, metric in pairs:
            if plugin_id not in known:
                continue
            found = await h.history(
                plugin_id,
                metric,
                since=since,
                until=until,
                step=step,
                agg=q.agg,
                max_points=q.points,
            )
            results.append(history_out(plugin_id, metric, since, until, q.agg, found))
        return s.ManyHistoryOut(
            since=since, until=until, agg=q.agg, results=results, unknown=unknown
        )

    @bp.get("/api/plugins/<plugin_id>/executions")
    @errors(400, 404, 401, 403, 503)
    @validate_querystring(s.ExecutionsQuery)
    @validate_response(s.ExecutionList)
    async def executions(plugin_id: str, query_args: s.ExecutionsQuery) -> s.ExecutionList:
        """An instance's executions, newest first; page with ``before``."""
        q = query_args
        found = await hub().executions(plugin_id, status=q.status, limit=q.limit, before=q.before)
        next_before = found[-1].id if len(found) == q.limit else None
        return s.ExecutionList(plugin_id, found, next_before)

    @bp.get("/api/plugins/<plugin_id>/health/history")
    @errors(400, 404, 401, 403, 503)
    @validate_querystring(s.HealthHistoryQuery)
    @validate_response(s.HealthHistoryOut)
    async def health_history(
        plugin_id: str, query_args: s.HealthHistoryQuery
    ) -> s.HealthHistoryOut:
        """An instance's stored health transitions, newest first; page with ``before``."""
        q = query_args
        found = await hub().health_history(plugin_id, limit=q.limit, before=q.before)
        next_before = found[-1].id if len(found) == q.limit else None
        return s.HealthHistoryOut(plugin_id, found, next_before)

    @bp.get("/api/nodes")
    @errors(401, 403, 503)
    @validate_response(s.NodeList)
    async def nodes() -> s.NodeList:
        """The nodes of the cluster: last heartbeat, version and the instances each runs
        (this node alone when it is not in a cluster)."""
        return s.NodeList(await hub().nodes())

    @bp.get("/api/alerts")
    @errors(400, 401, 403, 503)
    @validate_querystring(s.AlertsQuery)
    @validate_response(s.AlertList)
    async def list_alerts(query_args: s.AlertsQuery) -> s.AlertList:
        """Current alerts (pending, firing, recently resolved), firing first; silenced ones
        are listed with ``silenced`` true and the ids that mute them."""
        found = hub().alerts_list(state=query_args.state, severity=query_args.severity)
        return s.AlertList(found, len(found))

    @bp.get("/api/alerts/history")
    @errors(400, 401, 403, 503)
    @validate_querystring(s.AlertHistoryQuery)
    @validate_response(s.AlertHistoryOut)
    async def alert_history(query_args: s.AlertHistoryQuery) -> s.AlertHistoryOut:
        """Stored alert transitions, newest first; page with ``before``."""
        q = query_args
        found = await hub().alert_history(rule=q.rule, limit=q.limit, before=q.before)
        next_before = found[-1].id if len(found) == q.limit else None
        return s.AlertHistoryOut(found, next_before)

    @bp.get("/api/alerts/rules")
    @errors(401, 403, 503)
    @validate_response(s.RuleList)
    async def alert_rules() -> s.RuleList:
        """The configured rules, their fields named as in ``[alerts.<id>]``."""
        rules = [rule_out(r, source) for r, source in hub().alert_rules()]
        return s.RuleList(rules, len(rules))

    @bp.post("/api/alerts/rules")
    @errors(400, 401, 403, 409, 415, 503)
    @validate_request(s.NewRuleIn)
    @validate_response(s.RuleOut, 201)
    async def add_alert_rule(data: s.NewRuleIn) -> tuple[s.RuleOut, int]:
        """Make a rule, checked as ``[alerts.<id>]`` tables are, stored and applied at
        once; ``source`` is ``api``. An id that a rule of the file or of the API has is a 409."""
        data = await strict_body(s.NewRuleIn)
        rule = await hub().put_alert_rule(data.id, data.table(), create=True)
        return rule_out(rule, "api"), 201

    @bp.put("/api/alerts/rules/<rule_id>")
    @errors(400, 404, 401, 403, 409, 415, 503)
    @validate_request(s.RuleIn)
    @validate_response(s.RuleOut)
    async def replace_alert_rule(rule_id: str, data: s.RuleIn) -> s.RuleOut:
        """Replace a rule made through the API (a rule of the file is a 409: edit the file).
        Its alerts carry on when their series still match."""
        data = await strict_body(s.RuleIn)
        rule = await hub().put_alert_rule(rule_id, data.table(), create=False)
        return rule_out(rule, "api")

    @bp.delete("/api/alerts/rules/<rule_id>")
    @errors(404, 401, 403, 409, 503)
    @validate_response(s.RuleOut)
    async def remove_alert_rule(rule_id: str) -> s.RuleOut:
        """Delete a rule made through the API; its alerts end (their history is kept)."""
        h = hub()
        found = [(r, src) for r, src in h.alert_rules() if r.id == rule_id]
        await h.remove_alert_rule(rule_id)
        rule, source = found[0]
        return rule_out(rule, source)

    @bp.get("/api/silences")
    @errors(400, 401, 403, 503)
    @validate_querystring(s.SilencesQuery)
    @validate_response(s.SilenceList)
    async def list_silences(query_args: s.SilencesQuery) -> s.SilenceList:
        """Silences that have not ended (with ``include_expired``, the ended ones too)."""
        found = hub().silences(include_expired=query_args.include_expired)
        return s.SilenceList(found, len(found))

    @bp.post("/api/silences")
    @errors(400, 401, 403, 415, 503)
    @validate_request(s.SilenceIn)
    @validate_response(Silence, 201)
    async def add_silence(data: s.SilenceIn) -> tuple[Silence, int]:
        """Make a silence: alerts whose labels match every matcher send nothing until it
        ends (they still change state). Give ``ends_at`` or ``duration``."""
        now = time.time()
        starts_at = _moment(data.starts_at, "starts_at", now)
        if (data.ends_at is None) == (data.duration is None):
            raise ApiError(
                400, "invalid_request", "give either ends_at or duration (seconds), not both"
            )
        if data.ends_at is not None:
            ends_at = _body_time(data.ends_at, "ends_at", now)
        else:
            ends_at = (now if starts_at is None else starts_at) + (data.duration or 0.0)
        silence = await hub().add_silence(
            data.matchers,
            ends_at=ends_at,
            starts_at=starts_at,
            comment=data.comment,
            author=data.author,
        )
        return silence, 201

    @bp.delete("/api/silences/<silence_id>")
    @errors(404, 401, 403, 503)
    @validate_response(Silence)
    async def remove_silence(silence_id: str) -> Silence:
        """Remove a silence; its alerts may notify at once. Answers the removed silence."""
        h = hub()
        found = [x for x in h.silences(include_expired=True) if x.id == silence_id]
        await h.remove_silence(silence_id)
        removed: Silence = found[0]
        return removed

    @bp.get("/api/notifiers")
    @errors(401, 403, 503)
    @validate_response(s.NotifierList)
    async def list_notifiers() -> s.NotifierList:
        """The configured notifiers, their options (secrets redacted) and counters."""
        found = hub().notifiers()
        return s.NotifierList(found, len(found))

    @bp.post("/api/notifiers/<notifier_id>/test")
    @errors(404, 401, 403, 415, 503)
    @validate_response(s.NotifierTestOut)
    async def test_notifier(notifier_id: str) -> s.NotifierTestOut:
        """Send one test message through a notifier now (no retries); the attempt is
        recorded. Like every change, it needs ``Content-Type: application/json`` or a
        bearer token."""
        error = await hub().test_notifier(notifier_id)
        return s.NotifierTestOut(ok=error is None, error=error)

    @bp.get("/api/status")
    @errors(404, 503)
    @validate_response(StatusPage)
    async def status_figures() -> StatusPage:
        """The public status page's figures: the instances ``[status_page] instances``
        chooses, up or down now, their uptime over 24 h, 7 d and 30 d from the stored
        health transitions (unknown and disabled time left out), and their firing alerts.
        Readable without a token, even with ``auth = "all"``, when ``[status_page]
        enabled``; a 404 otherwise."""
        settings = web.settings.status_page
        if not settings.enabled:
            raise ApiError(404, "not_found", "the status page is off ([status_page] enabled)")
        return await hub().status_page(settings)

    @bp.get("/api/health")
    @validate_response(s.HealthCheckOut, 200)
    @validate_response(s.HealthCheckOut, 503)
    async def health() -> tuple[s.HealthCheckOut, int]:
        """Liveness and readiness: the store answers, its writes succeed, the scheduler runs."""
        running = web.running_hub
        readiness = await running.readiness() if running is not None else None
        ready = readiness is not None and readiness.ready
        body = s.HealthCheckOut(
            status="ok" if ready else "unavailable",
            live=True,
            ready=ready,
            store=readiness is not None and readiness.store_answers,
            scheduler=readiness is not None and readiness.scheduler_runs,
            writer=readiness is not None and readiness.writes_succeed,
            redis=readiness is not None and readiness.redis_answers,
            reason=readiness.reason if readiness is not None else "the hub is not running",
        )
        return body, 200 if ready else 503

    return bp
