"""The :class:`Notifier` base class, and what a notifier is given to send.

A notifier type is a plugin: a module that implements the ``register_notifiers`` hook
registers its classes, as ``register_plugins`` registers plugin types. Each
``[notifiers.<id>]`` table of ``homelab.toml`` is an instance of one type, with options
validated by the type's ``Config`` class (declared with :func:`~homelab_core.option`, so
that secrets are redacted everywhere). The alert service calls :meth:`Notifier.send` with a
:class:`Notification`: a group of alerts that fired or resolved together, with a title and
a text already rendered. ``send`` raises to report a failure; the service retries with
back-off and records every attempt, so a notifier only has to try once.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Generic, Literal

import attrs
from typing_extensions import TypeVar

from .options import NoConfig

#: The type of ``self.config``; a bare ``Notifier`` is ``Notifier[Any]``.
ConfigT = TypeVar("ConfigT", default=Any)

#: What a notification reports: alerts that fire, or alerts that are resolved.
NotificationStatus = Literal["firing", "resolved"]


@attrs.frozen
class AlertNotice:
    """One alert of a notification, as a notifier sees it."""

    #: The rule's id (``[alerts.<id>]``).
    rule: str
    #: Identifies the alert (the rule and the matched series or instance), stable across
    #: restarts: what a receiver can deduplicate on.
    fingerprint: str
    #: ``firing`` or ``resolved``.
    status: NotificationStatus
    severity: str
    #: The rule's labels, then the labels of the series or instance it matched.
    labels: dict[str, str]
    summary: str
    description: str
    #: The value that made the rule fire (or the last one seen), when it has one.
    value: float | None
    #: The instance the alert is about, when there is one.
    instance_id: str | None
    #: When the condition began to hold (seconds since the epoch).
    started_at: float
    #: When the alert resolved; None while it fires.
    resolved_at: float | None = None


@attrs.frozen
class Notification:
    """What :meth:`Notifier.send` sends: one group of alerts, with its message rendered."""

    #: The id of the notifier instance sending it.
    notifier: str
    #: The group's key (the route and the values of its ``group_by`` labels).
    group: str
    #: ``firing`` while any alert of the group fires, else ``resolved``.
    status: NotificationStatus
    alerts: list[AlertNotice]
    #: A one-line title ("[FIRING:2] disk-full: /srv on nas is 93 % full").
    title: str
    #: The message body: one line per alert, with its summary and description.
    text: str
    #: The highest severity among the alerts ("critical" before "warning" before "info").
    severity: str = "warning"
    #: A test message (``homelab notify-test``, ``POST /api/notifiers/{id}/test``).
    test: bool = False

    @property
    def firing(self) -> list[AlertNotice]:
        """The alerts of the group that fire."""
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertNotice]:
        """The alerts of the group that resolved since the last message."""
        return [a for a in self.alerts if a.status == "resolved"]


class NotifierError(Exception):
    """A notifier could not deliver; the message says why (the service retries)."""


class Notifier(Generic[ConfigT]):
    """Base class of notifier types.

    ``class Gotify(Notifier[GotifyConfig])`` names the options class once, as for
    :class:`~homelab_core.Plugin`. Implement :meth:`send`; override :meth:`close` to
    release clients. One object is created per ``[notifiers.<id>]`` table when the hub
    starts and closed when it stops. ``send`` runs on the event loop: use async I/O (or
    ``anyio.to_thread.run_sync`` for a blocking library). The service bounds each call by
    the notifier's ``timeout``, so a hung receiver cannot hold anything else up.
    """

    #: Type id: a slug, unique among installed notifier types (``type = "<name>"``).
    name: ClassVar[str]
    #: Human title of the type.
    title: ClassVar[str] = ""
    #: One-sentence description of where it sends.
    description: ClassVar[str] = ""
    #: Version of the notifier type.
    version: ClassVar[str] = "0.0.0"
    #: The attrs class of the options, taken from the type argument when not set.
    Config: ClassVar[type] = NoConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Config" in cls.__dict__:
            return
        for base in cls.__dict__.get("__orig_bases__", ()):
            args = getattr(base, "__args__", ())
            if args and isinstance(args[0], type) and args[0] is not Any:
                cls.Config = args[0]
                return

    def __init__(self, config: ConfigT, *, notifier_id: str) -> None:
        self.config: ConfigT = config
        self.notifier_id = notifier_id
        self.log = logging.getLogger(f"homelab.notifier.{notifier_id}")

    async def send(self, notification: Notification) -> None:
        """Deliver ``notification`` once; raise (:class:`NotifierError`) if it failed."""
        raise NotImplementedError(f"notifier type {self.name!r} does not implement send()")

    async def close(self) -> None:
        """Release what the notifier holds (clients, connections); called at shutdown."""
        return None

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the type's ``Config`` (descriptions, defaults, secrets)."""
        from .options import config_schema

        return config_schema(cls.Config)


def validate_notifier_type(obj: Any) -> list[str]:
    """Problems that keep ``obj`` from being a usable notifier type (empty when none)."""
    from .plugin import registered_class_problems

    if not (isinstance(obj, type) and issubclass(obj, Notifier)):
        return [f"{obj!r} is not a subclass of homelab_core.Notifier"]
    return registered_class_problems(obj, Notifier, "send")
