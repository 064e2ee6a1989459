"""Silences (made through the API or the CLI) and recurring maintenance windows (from the
config): both mute the alerts whose labels they match.

A matcher maps a label name to a value or a shell-style pattern (``instance = "nas*"``);
an alert matches when every matcher matches one of its labels. An alert's labels include
``rule``, ``severity``, ``instance``, ``type`` and ``metric``, the series' labels and the
rule's own labels. A silenced alert still changes state and is listed as silenced; it is
only left out of notifications.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from ..errors import InvalidArgumentError
from ..fielddoc import about
from .config import MaintenanceSettings


def matches(matchers: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches its label (a missing label matches only ``""``)."""
    for name, pattern in matchers.items():
        if not fnmatch.fnmatchcase(labels.get(name, ""), pattern):
            return False
    return True


@attrs.frozen
class Silence:
    """A silence: alerts matching ``matchers`` send nothing from ``starts_at`` to ``ends_at``."""

    id: Annotated[str, about("The silence's id.", "0b8e5c2a9f1d4c3b")]
    matchers: Annotated[
        dict[str, str],
        about(
            "Label name to value or shell-style pattern; muted: alerts that match them all.",
            {"rule": "disk-full", "instance": "nas*"},
        ),
    ]
    starts_at: Annotated[
        float, about("When it starts muting, in seconds since the epoch.", 1795970000.0)
    ]
    ends_at: Annotated[float, about("When it ends, in seconds since the epoch.", 1795977200.0)]
    comment: Annotated[str, about("Why it was made.", "disk swap")] = ""
    author: Annotated[str, about("Who made it.", "ana")] = ""
    created_at: Annotated[
        float, about("When it was made, in seconds since the epoch.", 1795970000.0)
    ] = attrs.field(factory=time.time)

    def active(self, now: float) -> bool:
        """Whether the silence mutes alerts at ``now``."""
        return self.starts_at <= now < self.ends_at

    def state(self, now: float) -> str:
        """``pending`` (not started), ``active`` or ``expired``."""
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    @classmethod
    def create(
        cls,
        matchers: Mapping[str, str],
        *,
        ends_at: float,
        starts_at: float | None = None,
        comment: str = "",
        author: str = "",
        now: float | None = None,
    ) -> Silence:
        """A new silence with a fresh id; :class:`InvalidArgumentError` for bad input."""
        now = time.time() if now is None else now
        start = now if starts_at is None else starts_at
        if not matchers:
            raise InvalidArgumentError(
                "a silence needs at least one matcher (label = value); it would mute every alert"
            )
        for name, value in matchers.items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise InvalidArgumentError(f"matcher {name!r}: label names and values are text")
        if ends_at <= start:
            raise InvalidArgumentError("a silence must end after it starts")
        if ends_at <= now:
            raise InvalidArgumentError("a silence must end in the future")
        return cls(
            id=uuid.uuid4().hex,
            matchers=dict(matchers),
            starts_at=start,
            ends_at=ends_at,
            comment=comment,
            author=author,
            created_at=now,
        )


@attrs.frozen
class MaintenanceWindow:
    """A recurring window: starts when ``cron`` fires (in ``timezone``), lasts ``duration``."""

    id: str
    cron: str
    duration: float
    matchers: dict[str, str]
    timezone: str = "UTC"
    comment: str = ""

    def __attrs_post_init__(self) -> None:
        from croniter import croniter

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if not croniter.is_valid(self.cron):
            raise ValueError(
                f"{self.cron!r} is not a cron expression (five fields: minute hour"
                " day-of-month month day-of-week, such as '0 3 * * sun')"
            )

    @classmethod
    def from_settings(cls, settings: MaintenanceSettings) -> MaintenanceWindow:
        """The window of a ``[maintenance.<id>]`` table."""
        return cls(
            settings.id,
            settings.cron,
            settings.duration,
            dict(settings.match),
            settings.timezone,
            settings.comment,
        )

    def current(self, now: float) -> tuple[float, float] | None:
        """The (start, end) of the window that contains ``now``, or None."""
        from croniter import croniter

        zone = ZoneInfo(self.timezone)
        moment = datetime.fromtimestamp(now, zone)
        # The latest start at or before now. croniter's get_prev gives the start before the
        # time it is given, and cron starts fall on whole minutes: ask from just after the
        # second now falls in (a second later would cross into the next minute at :59).
        after = moment.replace(microsecond=0) + timedelta(microseconds=1)
        start = croniter(self.cron, after).get_prev(datetime)
        began = start.timestamp()
        if began <= now < began + self.duration:
            return began, began + self.duration
        return None

    def next_start(self, now: float) -> float:
        """When the next window starts after ``now``."""
        from croniter import croniter

        moment = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        return float(croniter(self.cron, moment).get_next(datetime).timestamp())
