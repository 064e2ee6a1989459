"""The plugin manager: loads entry points one by one and collects plugin types."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginLoadError, PluginRegistrationError, UnknownPluginError
from .plugin import Plugin, validate_plugin_type

log = logging.getLogger("homelab.plugins")

ENTRY_POINT_GROUP = "homelab.plugins"
#: Comma-separated entry point names; when set, only those load.
LOAD_ENV = "HOMELAB_LOAD_PLUGINS"


class PluginManager:
    """Discovers plugin modules and the plugin types they register.

    Entry points of the ``homelab.plugins`` group load one at a time, each in its own
    ``try``: a plugin that fails to import is recorded in :attr:`load_errors` with its
    name and error, and the others still load.
    """

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.hook_manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.hook_manager.add_hookspecs(hookspecs)
        self._import_errors: list[PluginLoadError] = []
        self._registration_errors: list[PluginLoadError] = []
        self._types: dict[str, type[Plugin]] | None = None
        self._sources: dict[str, str] = {}
        self._entry_points_loaded = not load_entry_points

    @property
    def load_errors(self) -> list[PluginLoadError]:
        """Entry points that failed to import, then registrations that were refused."""
        return [*self._import_errors, *self._registration_errors]

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``manager.hook.<name>(...)``)."""
        return self.hook_manager.hook

    def register(self, module: ModuleType | object, name: str | None = None) -> None:
        """Register a plugin module or object by hand (tests, embedding applications)."""
        self.hook_manager.register(module, name=name)
        self._types = None

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        self.hook_manager.unregister(name=name)
        self._types = None

    def load_entry_points(self) -> None:
        """Import each entry point of the group once; failures go to :attr:`load_errors`."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        allowed = _allowed_names()
        for ep in _group_entry_points():
            if allowed is not None and ep.name not in allowed:
                continue
            if self.hook_manager.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                self.hook_manager.register(module, name=ep.name)
            except Exception as exc:
                error = PluginLoadError(ep.name, exc)
                self._import_errors.append(error)
                log.error("%s (entry point %s)", error, ep.value)
        self._types = None

    def plugin_types(self) -> dict[str, type[Plugin]]:
        """Every registered plugin type by its type id, loading entry points on first use."""
        self.load_entry_points()
        if self._types is None:
            self._types, self._sources = self._collect_types()
        return dict(self._types)

    def source_of(self, type_name: str) -> str:
        """The name of the plugin module that registered ``type_name``."""
        self.plugin_types()
        return self._sources[type_name]

    def get_type(self, type_name: str) -> type[Plugin]:
        """The plugin type called ``type_name``, or :class:`UnknownPluginError`."""
        types = self.plugin_types()
        if type_name not in types:
            raise UnknownPluginError(type_name, kind="plugin type")
        return types[type_name]

    def _collect_types(self) -> tuple[dict[str, type[Plugin]], dict[str, str]]:
        types: dict[str, type[Plugin]] = {}
        sources: dict[str, str] = {}
        self._registration_errors = []
        # In registration order, so that the first plugin to claim a type name keeps it.
        for impl in self.hook.register_plugins.get_hookimpls():
            source = impl.plugin_name

            def register(obj: Any, *, _source: str = source) -> None:
                problems = validate_plugin_type(obj)
                if problems:
                    raise PluginRegistrationError(
                        f"plugin {_source!r} registered an invalid type: {'; '.join(problems)}"
                    )
                if obj.name in types and types[obj.name] is not obj:
                    raise PluginRegistrationError(
                        f"plugin {_source!r} registered type {obj.name!r}, which plugin"
                        f" {sources[obj.name]!r} already registered"
                    )
                types[obj.name] = obj
                sources[obj.name] = _source

            try:
                impl.function(register=register)
            except PluginRegistrationError as exc:
                self._registration_errors.append(PluginLoadError(source, exc))
                log.error("%s", exc)
            except Exception as exc:
                error = PluginLoadError(source, exc)
                self._registration_errors.append(error)
                log.error("%s (in register_plugins)", error)
        return types, sources

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin, awaiting awaitable results.

        An implementation that raises is logged with the plugin's name; the rest still run.
        """
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                result = impl.function(**{k: kwargs[k] for k in impl.argnames})
                if inspect.isawaitable(result):
                    await _await(result)
            except Exception:
                log.exception("hook %s of plugin %r failed", hook_name, impl.plugin_name)

    def has_implementations(self, hook_name: str) -> bool:
        """Whether any registered plugin implements ``hook_name`` (to skip work if none)."""
        return bool(getattr(self.hook, hook_name).get_hookimpls())


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _allowed_names() -> set[str] | None:
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _group_entry_points() -> Iterable[EntryPoint]:
    seen: set[str] = set()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in seen:
            seen.add(ep.name)
            yield ep
