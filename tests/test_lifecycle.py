"""The instance life cycle: every allowed transition succeeds, every other one is refused."""

from __future__ import annotations

import itertools

import pytest

from homelab_core import InstanceState
from homelab_core.errors import ConflictError, InvalidTransitionError
from homelab_core.lifecycle import TRANSITIONS, Lifecycle, resolve_enabled

S = InstanceState
ALLOWED = [(a, b) for a, targets in TRANSITIONS.items() for b in sorted(targets)]
REFUSED = [(a, b) for a, b in itertools.product(S, S) if b not in TRANSITIONS[a]]


def test_every_state_has_its_transitions_listed() -> None:
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(("start", "end"), ALLOWED, ids=lambda s: s.value)
def test_an_allowed_transition_moves_the_state(start: InstanceState, end: InstanceState) -> None:
    lifecycle = Lifecycle(start)

    lifecycle.to(end, "why")

    assert (lifecycle.state, lifecycle.reason) == (end, "why")


@pytest.mark.parametrize(("start", "end"), REFUSED, ids=lambda s: s.value)
def test_a_refused_transition_raises_and_keeps_the_state(
    start: InstanceState, end: InstanceState
) -> None:
    lifecycle = Lifecycle(start, "before")

    with pytest.raises(InvalidTransitionError, match=f"from {start.value} to {end.value}"):
        lifecycle.to(end)

    assert (lifecycle.state, lifecycle.reason) == (start, "before")
    assert not lifecycle.can(end)


def test_an_invalid_transition_is_a_conflict() -> None:
    assert issubclass(InvalidTransitionError, ConflictError)


def test_the_tables_cover_every_pair_once() -> None:
    assert len(ALLOWED) + len(REFUSED) == len(S) ** 2
    assert (S.FAILED, S.SETTING_UP) in REFUSED, "a failed instance is not retried by itself"
    assert (S.READY, S.SETUP_RETRY) in REFUSED


@pytest.mark.parametrize(
    ("enabled", "state"), [(True, S.STOPPED), (False, S.DISABLED)], ids=["enabled", "disabled"]
)
def test_an_instance_starts_stopped_or_disabled(enabled: bool, state: InstanceState) -> None:
    lifecycle = Lifecycle.initial(enabled)
    assert lifecycle.state is state
    assert lifecycle.enabled is enabled


@pytest.mark.parametrize("state", [s for s in S if s is not S.DISABLED], ids=lambda s: s.value)
def test_every_state_but_disabled_is_enabled(state: InstanceState) -> None:
    assert Lifecycle(state).enabled


def test_disabling_and_enabling_pass_through_stopped() -> None:
    assert [s for s in S if Lifecycle(s).can(S.DISABLED)] == [S.STOPPED]
    assert TRANSITIONS[S.DISABLED] == {S.STOPPED}
    assert all(Lifecycle(s).can(S.STOPPED) for s in S if s is not S.STOPPED)


@pytest.mark.parametrize(
    ("configured", "stored", "stored_configured", "expected"),
    [
        (True, None, None, True),  # unknown to the store: the file decides
        (False, None, None, False),
        (True, False, True, False),  # disabled through the API, file unchanged: stays off
        (False, True, False, True),  # enabled through the API, file unchanged: stays on
        (True, False, False, True),  # the file changed to enabled since: the file wins
        (False, True, True, False),  # the file changed to disabled since: the file wins
    ],
)
def test_resolve_enabled(
    configured: bool, stored: bool | None, stored_configured: bool | None, expected: bool
) -> None:
    assert resolve_enabled(configured, stored, stored_configured) is expected
