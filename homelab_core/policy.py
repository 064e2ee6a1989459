"""The health and back-off policy: pure decisions, no event loop, no clock of its own.

Given what happened (a run's execution, a failed setup) and the health before it, these
functions say what the health is now, how long to back off and when to retry setup. The
scheduler applies them; tests call them directly with made-up times.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

import attrs

from .model import Execution, ExecutionStatus, Health, HealthReport, HealthState


class Change(enum.Enum):
    """A change of health worth one log line (logged once, not on every run)."""

    NONE = "none"
    #: The instance has just become failing.
    FAILING = "failing"
    #: The instance was failing and has just recovered.
    RECOVERED = "recovered"


class Verdict(NamedTuple):
    """The health after an event, and whether that is a change to log (a named tuple:
    one is made per run)."""

    health: Health
    change: Change = Change.NONE


def _since(previous: Health, state: HealthState, now: float) -> float:
    return previous.since if previous.state is state else now


def judge_run(
    previous: Health,
    execution: Execution,
    report: HealthReport | None,
    *,
    failure_threshold: int,
    now: float,
) -> Verdict:
    """The health after a run: the plugin's report (or ``ok``) when the run succeeded
    (``degraded`` if it succeeded with a note, such as having blocked the event loop);
    ``degraded``, then ``failing`` from ``failure_threshold`` consecutive failures on."""
    if execution.status is ExecutionStatus.OK:
        state = report.state if report else HealthState.OK
        message = report.message if report else ""
        if execution.error and state is HealthState.OK:
            # A run that worked but did harm (it blocked the event loop): degraded, and why.
            state, message = HealthState.DEGRADED, execution.error
        health = Health(  # built directly: attrs.evolve costs twice as much per run
            state=state,
            message=message,
            since=_since(previous, state, now),
            last_success=now,
            last_error=previous.last_error,
            last_error_at=previous.last_error_at,
            consecutive_failures=0,
        )
        recovered = previous.state is HealthState.FAILING and state is not HealthState.FAILING
        return Verdict(health, Change.RECOVERED if recovered else Change.NONE)
    failures = previous.consecutive_failures + 1
    failing = failures >= failure_threshold
    state = HealthState.FAILING if failing else HealthState.DEGRADED
    health = attrs.evolve(
        previous,
        state=state,
        message=f"{failures} consecutive failure(s): {execution.error}",
        last_error=execution.error,
        last_error_at=now,
        consecutive_failures=failures,
        since=_since(previous, state, now),
    )
    newly = failing and previous.state is not HealthState.FAILING
    return Verdict(health, Change.FAILING if newly else Change.NONE)


def judge_setup_retry(previous: Health, error: str, wait: float, *, now: float) -> Verdict:
    """The health after a failed setup that will be tried again in ``wait`` seconds."""
    health = attrs.evolve(
        previous,
        state=HealthState.FAILING,
        message=f"{error}; retrying in {wait:g} s",
        since=_since(previous, HealthState.FAILING, now),
        last_error=error,
        last_error_at=now,
        consecutive_failures=previous.consecutive_failures + 1,
    )
    newly = previous.state is not HealthState.FAILING
    return Verdict(health, Change.FAILING if newly else Change.NONE)


def judge_setup_failed(previous: Health, error: str, *, now: float) -> Verdict:
    """The health after a permanent setup failure: ``failed``, with the reason."""
    health = attrs.evolve(
        previous,
        state=HealthState.FAILED,
        message=f"{error}; not retried: disable and enable the instance to try again",
        since=now,
        last_error=error,
        last_error_at=now,
        consecutive_failures=previous.consecutive_failures + 1,
    )
    return Verdict(health, Change.FAILING)


def backoff_delay(interval: float, failures: int, max_backoff: float) -> float:
    """Seconds to pass scheduled runs after ``failures`` consecutive failures.

    Doubles from one interval with each failure, capped at ``max_backoff`` (but never
    shorter than one interval: a run is due every interval anyway).
    """
    factor = 2 ** max(0, failures - 1)
    return float(min(interval * factor, max(interval, max_backoff)))


def setup_wait(waits: Sequence[float], attempt: int, retry_after: float | None = None) -> float:
    """Seconds before setup attempt ``attempt + 1``: ``retry_after`` when the plugin asked
    for it, else the ``attempt``-th wait (the last one repeats)."""
    if retry_after is not None and retry_after >= 0:
        return retry_after
    waits = waits or (5.0,)
    return waits[min(attempt, len(waits) - 1)]


def thread_hung_health(previous: Health, hung: str, *, now: float) -> Health:
    """The health of an instance waiting, before its setup, for a worker thread of its
    plugin that still runs an earlier call (``hung`` says which, and for how long)."""
    return attrs.evolve(
        previous,
        state=HealthState.FAILING,
        message=(
            f"not set up again until its worker thread returns: {hung or 'an earlier call'}"
            " (abandoned after its timeout)"
        ),
        since=_since(previous, HealthState.FAILING, now),
    )


def disabled_health() -> Health:
    """The health of a disabled instance."""
    return Health(state=HealthState.DISABLED, message="disabled")


def enabled_health() -> Health:
    """The health of an instance just enabled (nothing known until it runs)."""
    return Health(state=HealthState.UNKNOWN, message="enabled")
