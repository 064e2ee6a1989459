"""The public status page's figures: each chosen instance up or down, its uptime over
24 hours, 7 days and 30 days from the stored health transitions, and the incidents (firing
alerts) of those instances.

Up is ``ok`` or ``degraded``, down is ``failing`` or ``failed``; time ``unknown`` or
``disabled`` counts as neither, so a percentage is of the time the instance was judged
(``None`` when it never was in the window). A window starts in the state of the instance's
last transition before it (``unknown`` if there is none).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Annotated, Literal

import attrs

from .fielddoc import about
from .model import HealthState

if TYPE_CHECKING:
    from .config import StatusPageSettings
    from .hub import Hub

#: The windows of the page: name and length in seconds.
WINDOWS: tuple[tuple[str, float], ...] = (
    ("24h", 86400.0),
    ("7d", 7 * 86400.0),
    ("30d", 30 * 86400.0),
)
UP_STATES = frozenset({HealthState.OK, HealthState.DEGRADED})
DOWN_STATES = frozenset({HealthState.FAILING, HealthState.FAILED})


def availability(state: HealthState | str) -> Literal["up", "down", "unknown"]:
    """``up``, ``down`` or ``unknown`` (not judged, or disabled) for a health state."""
    if state in UP_STATES:
        return "up"
    if state in DOWN_STATES:
        return "down"
    return "unknown"


def up_and_down(
    spans: Sequence[tuple[float, str]], start: float, end: float
) -> tuple[float, float]:
    """Seconds up and seconds down between ``start`` and ``end``, from ``spans``: (time, new
    state) of the transitions, oldest first, the first of them possibly before ``start``
    (the state the window starts in)."""
    up = down = 0.0
    state = "unknown"
    at = start
    for ts, new_state in spans:
        if ts > at:
            moment = min(ts, end)
            kind = availability(state)
            if kind == "up":
                up += moment - at
            elif kind == "down":
                down += moment - at
            at = moment
        if ts >= end:
            return up, down
        state = new_state
    kind = availability(state)
    if end > at:
        if kind == "up":
            up += end - at
        elif kind == "down":
            down += end - at
    return up, down


def chosen(instance_ids: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The ids that match any of ``patterns`` (ids or shell patterns), in their order."""
    return [i for i in instance_ids if any(fnmatchcase(i, p) for p in patterns)]


@attrs.frozen
class Uptime:
    """An instance's availability over one window ending now."""

    window: Annotated[str, about("The window: 24h, 7d or 30d.", "24h")]
    seconds: Annotated[float, about("Its length in seconds.", 86400.0)]
    percent: Annotated[
        float | None,
        about(
            "Time up as a percentage of the time up or down (unknown and disabled time left"
            " out); null when the instance was never judged in the window.",
            99.93,
        ),
    ]
    up_seconds: Annotated[float, about("Seconds up (ok or degraded).", 86340.0)]
    down_seconds: Annotated[float, about("Seconds down (failing or failed).", 60.0)]


@attrs.frozen
class StatusInstance:
    """One instance as the status page shows it (no config, no messages)."""

    id: Annotated[str, about("The instance's id.", "nas-web")]
    title: Annotated[str, about("Its plugin type's title.", "HTTP check")]
    category: Annotated[str, about("Its plugin type's category.", "network")]
    status: Annotated[
        Literal["up", "down", "unknown"],
        about("up (ok or degraded), down (failing or failed) or unknown (or disabled).", "up"),
    ]
    state: Annotated[HealthState, about("Its health state now.", "ok")]
    since: Annotated[
        float, about("When that state began, in seconds since the epoch.", 1795970969.15)
    ]
    uptime: Annotated[list[Uptime], about("Its uptime over 24 hours, 7 days and 30 days.")]


@attrs.frozen
class Incident:
    """A firing alert of a chosen instance."""

    instance_id: Annotated[str, about("The instance it concerns.", "nas-web")]
    rule: Annotated[str, about("The rule that raised it.", "nas-down")]
    severity: Annotated[str, about("critical, warning or info.", "critical")]
    summary: Annotated[str, about("The rule's summary, filled in.", "nas-web is failing")]
    since: Annotated[
        float | None, about("When it started firing, in seconds since the epoch.", 1795970600.0)
    ]


@attrs.frozen
class StatusPage:
    """Everything the public status page shows."""

    title: Annotated[str, about("The page's heading ([status_page] title).", "Status")]
    description: Annotated[
        str, about("A sentence under the heading ([status_page] description).", "Home services")
    ]
    generated_at: Annotated[
        float, about("When these figures were computed, in seconds since the epoch.", 1795971000.0)
    ]
    instances: Annotated[list[StatusInstance], about("The chosen instances, in order.")]
    incidents: Annotated[list[Incident], about("Firing alerts of those instances, newest first.")]


async def status_figures(
    hub: Hub, settings: StatusPageSettings, now: float | None = None
) -> StatusPage:
    """:meth:`Hub.status_page`: the figures at ``now`` (by default the present)."""
    end = time.time() if now is None else now
    infos = {i.id: i for i in hub.instances()}
    ids = chosen(list(infos), settings.instances)
    longest = max(seconds for _, seconds in WINDOWS)
    spans = await hub.store.health_spans(ids, since=end - longest)
    instances = []
    for instance_id in ids:
        info = infos[instance_id]
        health = info.health
        found = spans[instance_id]
        # The scheduler's health is newer than the store when its transition is still
        # queued: count it from when it began.
        if health.since <= end and (not found or health.since > found[-1][0]):
            found.append((health.since, health.state.value))
        uptime = []
        for window, seconds in WINDOWS:
            up, down = up_and_down(found, end - seconds, end)
            percent = round(100.0 * up / (up + down), 3) if up + down > 0 else None
            uptime.append(Uptime(window, seconds, percent, round(up, 3), round(down, 3)))
        instances.append(
            StatusInstance(
                id=instance_id,
                title=info.title,
                category=info.category,
                status=availability(health.state),
                state=health.state,
                since=health.since,
                uptime=uptime,
            )
        )
    wanted = set(ids)
    incidents = [
        Incident(a.instance_id, a.rule, a.severity, a.summary, a.fired_at)
        for a in hub.alerts_list(state="firing")
        if a.instance_id in wanted
    ]
    incidents.sort(key=lambda x: x.since or 0.0, reverse=True)
    return StatusPage(settings.title, settings.description, end, instances, incidents)
