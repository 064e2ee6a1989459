"""The exception family of Homelab Core: every error the library raises on purpose.

The classes say what kind of failure it is, so that callers (the web layer, the CLI)
choose their answer by class, never by message: an unknown name is a :class:`NotFoundError`
(404), a bad argument an :class:`InvalidArgumentError` (400), an action the current state
forbids a :class:`ConflictError` (409), and an unreachable database a :class:`StoreError`
(503). :class:`SetupNotReady` and :class:`SetupFailed` are raised *by plugins* from
``setup()`` to steer what the scheduler does next.

This module imports nothing but the standard library: importing it is cheap.
"""

from __future__ import annotations


class HomelabError(Exception):
    """Base class of every error raised by Homelab Core."""


class ConfigError(HomelabError):
    """Invalid configuration; the message names the file, the table and the field."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        table: str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = file
        self.table = table
        self.field = field
        self.reason = message
        where = []
        if file:
            where.append(str(file))
        if table:
            where.append(f"[{table}]")
        if field:
            where.append(field)
        super().__init__(f"{' '.join(where)}: {message}" if where else message)

    def set_by(self, variable: str) -> ConfigError:
        """The same error, saying which environment variable supplied the value."""
        return ConfigError(
            f"{self.reason} (set by ${variable})",
            file=self.file,
            table=self.table,
            field=self.field,
        )


class PluginError(HomelabError):
    """A plugin did something the framework cannot accept."""


class PluginRegistrationError(PluginError):
    """A plugin registered something unusable, or implements a hook it may not."""


class PluginLoadError(PluginError):
    """A plugin failed to import or to register; ``entry_point`` names it."""

    def __init__(
        self, entry_point: str, error: BaseException, *, hook: str = "register_plugins"
    ) -> None:
        self.entry_point = entry_point
        self.error = error
        #: The hook that failed (``register_plugins``, ``register_notifiers``), or the
        #: import: ``register_plugins`` stands for both, as before notifiers existed.
        self.hook = hook
        if isinstance(error, PluginRegistrationError):
            message = str(error)  # already names the plugin
        else:
            message = f"plugin {entry_point!r} failed to load: {type(error).__name__}: {error}"
        super().__init__(message)


class NotFoundError(HomelabError, LookupError):
    """Something asked for by name does not exist."""


class UnknownInstanceError(NotFoundError):
    """No plugin instance has the given id."""

    def __init__(self, instance_id: str) -> None:
        self.name = instance_id
        super().__init__(f"unknown plugin instance {instance_id!r}")


class UnknownPluginTypeError(NotFoundError):
    """No installed plugin type has the given name."""

    def __init__(
        self, type_name: str, installed: list[str] | None = None, *, kind: str = "plugin type"
    ) -> None:
        self.name = type_name
        self.kind = kind
        known = "" if installed is None else f"; installed types: {', '.join(installed) or 'none'}"
        super().__init__(f"unknown {kind} {type_name!r}{known}")


class InvalidArgumentError(HomelabError, ValueError):
    """An argument of a call is out of range or of the wrong form (a 400 on the API)."""


class ConflictError(HomelabError):
    """The action is not possible in the current state (a disabled instance was asked
    to run, an instance is not set up yet); a 409 on the API."""


class InvalidTransitionError(ConflictError):
    """An instance's life cycle was asked to move to a state it cannot reach from its own."""


class StoreError(HomelabError):
    """The store could not be opened or used."""


class ClusterError(HomelabError):
    """The cluster's Redis could not be reached or answered wrongly (a 503 on the API)."""


class SetupNotReady(HomelabError):
    """Raised by a plugin's ``setup()``: not ready yet (the device is booting, the service
    not up); the framework retries.

    :param retry_after: seconds to wait before the next attempt, instead of the
        scheduler's next setup-retry wait.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SetupFailed(HomelabError):
    """Raised by a plugin's ``setup()``: a permanent failure (bad credentials, an
    unsupported device) that retrying cannot cure.

    The instance is left ``failed`` with the message as the reason, and not retried until
    it is disabled and enabled again.
    """
