"""The exception family of Homelab Core: every error the library raises on purpose."""

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
    """A plugin registered something unusable, or implements a hook that does not exist."""


class PluginLoadError(PluginError):
    """A plugin failed to import or to register; ``entry_point`` names it."""

    def __init__(self, entry_point: str, error: BaseException) -> None:
        self.entry_point = entry_point
        self.error = error
        if isinstance(error, PluginRegistrationError):
            message = str(error)  # already names the plugin
        else:
            message = f"plugin {entry_point!r} failed to load: {type(error).__name__}: {error}"
        super().__init__(message)


class UnknownPluginError(HomelabError, LookupError):
    """No plugin instance or type has the given id."""

    def __init__(self, name: str, kind: str = "plugin instance") -> None:
        self.name = name
        super().__init__(f"unknown {kind} {name!r}")


class StoreError(HomelabError):
    """The store could not be opened or used."""
