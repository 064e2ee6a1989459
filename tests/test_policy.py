"""The health and back-off policy, as plain functions: no event loop, made-up times."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from homelab_core import Execution, ExecutionStatus, Health, HealthReport, HealthState, policy
from homelab_core.policy import Change


def execution(status: ExecutionStatus, error: str | None = None) -> Execution:
    return Execution(instance_id="i", started_at=0.0, duration=0.1, status=status, error=error)


OK = execution(ExecutionStatus.OK)
FAILED = execution(ExecutionStatus.ERROR, "boom")


def run(previous: Health, result: Execution, report: HealthReport | None = None) -> policy.Verdict:
    return policy.judge_run(previous, result, report, failure_threshold=3, now=100.0)


def test_a_good_run_is_ok_and_resets_the_failures() -> None:
    verdict = run(Health(HealthState.DEGRADED, consecutive_failures=2, since=5.0), OK)
    assert verdict.health.state is HealthState.OK
    assert verdict.health.consecutive_failures == 0
    assert verdict.health.last_success == 100.0
    assert verdict.health.since == 100.0, "a new state starts now"
    assert verdict.change is Change.NONE


def test_the_plugins_report_wins_over_ok() -> None:
    report = HealthReport(HealthState.DEGRADED, "disk 91 % full")
    verdict = run(Health(HealthState.OK), OK, report)
    assert (verdict.health.state, verdict.health.message) == (
        HealthState.DEGRADED,
        "disk 91 % full",
    )


def test_a_state_that_stays_keeps_its_since() -> None:
    verdict = run(Health(HealthState.OK, since=7.0), OK)
    assert verdict.health.since == 7.0


def test_failures_degrade_then_fail_at_the_threshold_and_log_once() -> None:
    health = Health(HealthState.OK)
    changes = []
    for _ in range(5):
        verdict = run(health, FAILED)
        health = verdict.health
        changes.append((health.state, verdict.change))
    assert changes == [
        (HealthState.DEGRADED, Change.NONE),
        (HealthState.DEGRADED, Change.NONE),
        (HealthState.FAILING, Change.FAILING),
        (HealthState.FAILING, Change.NONE),
        (HealthState.FAILING, Change.NONE),
    ]
    assert health.message == "5 consecutive failure(s): boom"
    assert (health.last_error, health.last_error_at) == ("boom", 100.0)


def test_recovery_from_failing_is_one_change() -> None:
    verdict = run(Health(HealthState.FAILING, consecutive_failures=4), OK)
    assert verdict.change is Change.RECOVERED
    assert run(verdict.health, OK).change is Change.NONE


def test_a_setup_retry_is_failing_with_the_wait_in_its_message() -> None:
    verdict = policy.judge_setup_retry(Health(), "setup failed: refused", 10.0, now=50.0)
    assert verdict.health.state is HealthState.FAILING
    assert verdict.health.message == "setup failed: refused; retrying in 10 s"
    assert verdict.change is Change.FAILING
    again = policy.judge_setup_retry(verdict.health, "setup failed: refused", 20.0, now=60.0)
    assert again.change is Change.NONE
    assert again.health.since == 50.0
    assert again.health.consecutive_failures == 2


def test_a_permanent_setup_failure_is_failed_and_says_how_to_retry() -> None:
    verdict = policy.judge_setup_failed(Health(), "setup failed: SetupFailed: bad key", now=5.0)
    assert verdict.health.state is HealthState.FAILED
    assert verdict.health.message.startswith("setup failed: SetupFailed: bad key; not retried")
    assert "disable and enable" in verdict.health.message


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, 10.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (9, 60.0)]
)
def test_backoff_doubles_from_one_interval_up_to_the_cap(failures: int, expected: float) -> None:
    assert policy.backoff_delay(10.0, failures, 60.0) == expected


def test_backoff_is_never_shorter_than_an_interval() -> None:
    assert policy.backoff_delay(120.0, 3, 60.0) == 120.0


@pytest.mark.parametrize(("attempt", "expected"), [(0, 5.0), (1, 10.0), (2, 20.0), (7, 20.0)])
def test_setup_waits_step_through_the_list_and_repeat_the_last(
    attempt: int, expected: float
) -> None:
    assert policy.setup_wait([5.0, 10.0, 20.0], attempt) == expected


def test_a_plugins_retry_after_overrides_the_wait() -> None:
    assert policy.setup_wait([5.0], 3, retry_after=1.5) == 1.5
    assert policy.setup_wait([], 0) == 5.0


def test_disabled_and_enabled_health() -> None:
    assert policy.disabled_health().state is HealthState.DISABLED
    assert policy.enabled_health().state is HealthState.UNKNOWN


def test_the_policy_imports_no_event_loop_library() -> None:
    tree = ast.parse(Path(policy.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"anyio", "asyncio", "trio"}
