"""The life cycle of a plugin instance: its states and the only transitions between them.

An instance is ``STOPPED`` (enabled, not running) or ``DISABLED`` before the scheduler
starts it. Starting moves it to ``SETTING_UP``; ``setup()`` then leads to ``READY``, to
``SETUP_RETRY`` (an error, a timeout or :class:`~homelab_core.errors.SetupNotReady`: tried
again after a wait) or to ``FAILED`` (:class:`~homelab_core.errors.SetupFailed`: not tried
again). Stopping the instance's task (to disable it, or because the scheduler stops)
takes every running state back to ``STOPPED``; only ``STOPPED`` and ``DISABLED`` lead to
each other (disable, enable).

The table :data:`TRANSITIONS` is the whole truth; docs/architecture.md draws it.
"""

from __future__ import annotations

import attrs

from .errors import InvalidTransitionError
from .model import InstanceState

S = InstanceState

#: Every allowed transition: from a state, the states it may move to.
TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.STOPPED: frozenset({S.SETTING_UP, S.DISABLED}),
    S.SETTING_UP: frozenset({S.READY, S.SETUP_RETRY, S.FAILED, S.STOPPED}),
    S.SETUP_RETRY: frozenset({S.SETTING_UP, S.STOPPED}),
    S.READY: frozenset({S.STOPPED}),
    S.FAILED: frozenset({S.STOPPED}),
    S.DISABLED: frozenset({S.STOPPED}),
}


@attrs.define
class Lifecycle:
    """The state of one instance; :meth:`to` is the only way to change it.

    ``reason`` says why the instance is in its state (the permanent setup error of a
    ``FAILED`` instance, the last setup error while retrying), or is empty.
    """

    state: InstanceState = S.STOPPED
    reason: str = ""

    @classmethod
    def initial(cls, enabled: bool) -> Lifecycle:
        """The state of an instance that has not started: stopped, or disabled."""
        return cls(S.STOPPED if enabled else S.DISABLED)

    @property
    def enabled(self) -> bool:
        """Whether the instance is enabled (any state but ``DISABLED``)."""
        return self.state is not S.DISABLED

    def can(self, state: InstanceState) -> bool:
        """Whether :meth:`to` would accept ``state``."""
        return state in TRANSITIONS[self.state]

    def to(self, state: InstanceState, reason: str = "") -> None:
        """Move to ``state``; :class:`InvalidTransitionError` if it is not allowed."""
        if state not in TRANSITIONS[self.state]:
            raise InvalidTransitionError(
                f"an instance cannot go from {self.state.value} to {state.value}"
            )
        self.state, self.reason = state, reason


def resolve_enabled(configured: bool, stored: bool | None, stored_configured: bool | None) -> bool:
    """Whether an instance starts enabled: the one rule, for the hub and the CLI alike.

    The stored choice (made through the API) wins, unless the config file's ``enabled``
    changed since the store last saw it (``stored_configured``): editing the file is a
    newer decision than the API's.

    :param configured: ``enabled`` in the config file now.
    :param stored: the stored enabled state, or None if the store does not know the instance.
    :param stored_configured: the file's ``enabled`` when the store last saved the instance.
    """
    if stored is None or stored_configured != configured:
        return configured
    return stored
