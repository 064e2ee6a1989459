"""The plugin manager: loads entry points one by one, collects plugin types, calls hooks.

It is the only owner of pluggy: callers ask it to call a hook (:meth:`PluginManager.notify`,
:meth:`PluginManager.add_commands`, :meth:`PluginManager.plugin_types`) and never handle
pluggy's implementation objects themselves.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginLoadError, PluginRegistrationError, UnknownPluginTypeError
from .notifier import Notifier, validate_notifier_type
from .plugin import Plugin, validate_plugin_type
from .runner import is_cancellation

if TYPE_CHECKING:
    import click

log = logging.getLogger("homelab.plugins")
#: One INFO line per hook implementation called, when :data:`TRACE_ENV` is set.
trace_log = logging.getLogger("homelab.plugins.trace")

ENTRY_POINT_GROUP = "homelab.plugins"
#: Comma-separated entry point names; when set, only those load.
LOAD_ENV = "HOMELAB_LOAD_PLUGINS"
#: Any value but empty or ``0``: log every hook implementation call and its duration.
TRACE_ENV = "HOMELAB_TRACE_PLUGINS"

#: Why wrappers and ``firstresult`` hooks are refused, for the load error.
_WHY_NOT = (
    "the framework calls each implementation itself and awaits the results of async ones,"
    " so {consequence} (see docs/hooks.md)"
)


class PluginManager:
    """Discovers plugin modules and the plugin types they register.

    Entry points of the ``homelab.plugins`` group load one at a time, each in its own
    ``try``: a plugin that fails to import is recorded in :attr:`load_errors` with its
    name and error, and the others still load.

    Set :data:`TRACE_ENV` (read when the manager is created) to log, on the
    ``homelab.plugins.trace`` logger, how long each hook implementation took.
    """

    def __init__(self, *, load_entry_points: bool = True, log_errors: bool = True) -> None:
        #: The pluggy manager underneath, for adding hook specs (tests); call hooks
        #: through :meth:`notify`, :meth:`add_commands` and :meth:`plugin_types`.
        self.hook_manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.log_errors = log_errors
        self.hook_manager.add_hookspecs(hookspecs)
        self._import_errors: list[PluginLoadError] = []
        self._registration_errors: list[PluginLoadError] = []
        self._types: dict[str, type[Plugin]] | None = None
        self._notifier_types: dict[str, type[Notifier]] | None = None
        self._sources: dict[str, str] = {}
        self._entry_points_loaded = not load_entry_points
        self._trace = _trace_enabled()
        if self._trace:
            # Shown by any handler the application set up, whatever the root logger's level.
            trace_log.setLevel(logging.INFO)

    @property
    def load_errors(self) -> list[PluginLoadError]:
        """Entry points that failed to import, then registrations that were refused."""
        return [*self._import_errors, *self._registration_errors]

    def register(self, module: ModuleType | object, name: str | None = None) -> None:
        """Register a plugin module or object by hand (tests, embedding applications).

        A hook implementation whose name matches no hook (a misspelling) is reported in
        :attr:`load_errors`, since it would otherwise never be called. A plugin with a
        hook wrapper, or with an implementation of a ``firstresult`` hook, is refused: it
        is unregistered again, so none of its hooks run, and :attr:`load_errors` says why.
        """
        self.hook_manager.register(module, name=name)
        self._types = None
        self._notifier_types = None
        plugin_name = self.hook_manager.get_name(module) or repr(module)
        callers = self.hook_manager.get_hookcallers(module) or []
        refused = _unsupported(module, callers)
        if refused:
            self.hook_manager.unregister(module)
            self._record(
                self._import_errors,
                PluginLoadError(
                    plugin_name,
                    PluginRegistrationError(
                        f"plugin {plugin_name!r} was not registered: {'; '.join(refused)}"
                    ),
                ),
            )
            return
        unknown = sorted(caller.name for caller in callers if caller.spec is None)
        if unknown:
            self._record(
                self._import_errors,
                PluginLoadError(
                    plugin_name,
                    PluginRegistrationError(
                        f"plugin {plugin_name!r} implements unknown hook(s):"
                        f" {', '.join(unknown)}; they will never be called (see docs/hooks.md)"
                    ),
                ),
            )

    def _record(self, errors: list[PluginLoadError], error: PluginLoadError) -> None:
        errors.append(error)
        if self.log_errors:
            log.error("%s", error)

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name``."""
        self.hook_manager.unregister(name=name)
        self._types = None
        self._notifier_types = None

    def load_entry_points(self) -> None:
        """Import each entry point of the group once; failures go to :attr:`load_errors`."""
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        allowed = _allowed_names()
        seen: dict[str, str] = {}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = ep.dist.name if ep.dist is not None else "?"
            if ep.name in seen:
                if seen[ep.name] != dist:
                    self._record(
                        self._import_errors,
                        PluginLoadError(
                            ep.name,
                            PluginRegistrationError(
                                f"entry point {ep.name!r} is declared by both {seen[ep.name]!r}"
                                f" and {dist!r}; the one from {dist!r} is ignored"
                            ),
                        ),
                    )
                continue
            seen[ep.name] = dist
            if self.hook_manager.has_plugin(ep.name):
                continue
            try:
                self.register(ep.load(), name=ep.name)
            except Exception as exc:
                self._record(self._import_errors, PluginLoadError(ep.name, exc))
        self._types = None
        self._notifier_types = None

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
        """The plugin type called ``type_name``, or :class:`UnknownPluginTypeError`."""
        types = self.plugin_types()
        if type_name not in types:
            raise UnknownPluginTypeError(type_name, sorted(types))
        return types[type_name]

    def notifier_types(self) -> dict[str, type[Notifier]]:
        """Every registered notifier type by its type id (the ``register_notifiers`` hook)."""
        self.load_entry_points()
        if self._notifier_types is None:
            self._notifier_types = self._collect_registered(
                "register_notifiers", validate_notifier_type, "notifier type"
            )[0]
        return dict(self._notifier_types)

    def get_notifier_type(self, type_name: str) -> type[Notifier]:
        """The notifier type called ``type_name``, or :class:`UnknownPluginTypeError`."""
        types = self.notifier_types()
        if type_name not in types:
            raise UnknownPluginTypeError(type_name, sorted(types), kind="notifier type")
        return types[type_name]

    def _collect_types(self) -> tuple[dict[str, type[Plugin]], dict[str, str]]:
        return self._collect_registered("register_plugins", validate_plugin_type, "type")

    def _collect_registered(
        self, hook: str, validate: Callable[[Any], list[str]], kind: str
    ) -> tuple[dict[str, Any], dict[str, str]]:
        types: dict[str, Any] = {}
        sources: dict[str, str] = {}
        self._registration_errors = [e for e in self._registration_errors if e.hook != hook]
        # In registration order, so that the first plugin to claim a type name keeps it.
        for impl in self._implementations(hook):
            source = impl.plugin_name

            def register(obj: Any, *, _source: str = source) -> None:
                problems = validate(obj)
                if problems:
                    raise PluginRegistrationError(
                        f"plugin {_source!r} registered an invalid {kind}: {'; '.join(problems)}"
                    )
                if obj.name in types and types[obj.name] is not obj:
                    raise PluginRegistrationError(
                        f"plugin {_source!r} registered {kind} {obj.name!r}, which plugin"
                        f" {sources[obj.name]!r} already registered"
                    )
                types[obj.name] = obj
                sources[obj.name] = _source

            try:
                self._call(hook, impl, register=register)
            except Exception as exc:
                self._record(self._registration_errors, PluginLoadError(source, exc, hook=hook))
        return types, sources

    def add_commands(self, cli: click.Group) -> list[str]:
        """Let every plugin add commands to ``cli`` through ``register_commands``.

        The commands ``cli`` has before the call are built in: a plugin that replaces one
        gets the built-in put back. A plugin that raises keeps the commands it added
        before raising. Nothing is printed: each problem is returned as a message naming
        the plugin, for the command line to show as a warning.
        """
        builtins = dict(cli.commands)
        warnings: list[str] = []
        for impl in self._implementations("register_commands"):
            try:
                self._call("register_commands", impl, cli=cli)
            except Exception as exc:
                warnings.append(f"plugin {impl.plugin_name!r} failed to add commands: {exc}")
            for name, command in builtins.items():
                if cli.commands.get(name) is not command:
                    cli.commands[name] = command
                    warnings.append(
                        f"plugin {impl.plugin_name!r} tried to replace the built-in"
                        f" command {name!r}; kept the built-in"
                    )
        return warnings

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook on every plugin, awaiting awaitable results.

        Implementations run one at a time, ``tryfirst`` ones first, ``trylast`` ones last
        and the rest in registration order. One that raises (anything but a cancellation,
        ``SystemExit`` included) is logged with the plugin's name; the rest still run.
        """
        for impl in self._implementations(hook_name):
            start = time.perf_counter()
            failed = True
            try:
                result = _call_impl(impl, **kwargs)
                if inspect.isawaitable(result):
                    await _await(result)
                failed = False
            except BaseException as exc:
                if is_cancellation(exc):
                    raise
                # SystemExit or KeyboardInterrupt from a hook are the plugin's fault too.
                log.exception("hook %s of plugin %r failed", hook_name, impl.plugin_name)
            finally:
                if self._trace:
                    _log_call(hook_name, impl, start, failed)

    def _call(self, hook_name: str, impl: Any, **kwargs: Any) -> Any:
        """Call one implementation of a hook whose results are not awaited, traced."""
        if not self._trace:
            return _call_impl(impl, **kwargs)
        start = time.perf_counter()
        failed = True
        try:
            result = _call_impl(impl, **kwargs)
            failed = False
            return result
        finally:
            _log_call(hook_name, impl, start, failed)

    def _implementations(self, hook_name: str) -> list[Any]:
        """The implementations of a hook in calling order.

        ``tryfirst`` ones first and ``trylast`` ones last, as in pluggy; the rest in the
        order their plugins were registered.
        """
        impls = getattr(self.hook_manager.hook, hook_name).get_hookimpls()
        return sorted(impls, key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1)

    def has_implementations(self, hook_name: str) -> bool:
        """Whether any registered plugin implements ``hook_name`` (to skip work if none)."""
        return bool(getattr(self.hook_manager.hook, hook_name).get_hookimpls())


def _call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it declares (pluggy allows fewer)."""
    return impl.function(**{name: kwargs[name] for name in impl.argnames})


def _log_call(hook_name: str, impl: Any, start: float, failed: bool) -> None:
    duration_ms = (time.perf_counter() - start) * 1000
    trace_log.info(
        "hook %s of plugin %r took %.3f ms%s",
        hook_name,
        impl.plugin_name,
        duration_ms,
        " (raised)" if failed else "",
        extra={"hook": hook_name, "plugin": impl.plugin_name, "duration_ms": duration_ms},
    )


def _unsupported(plugin: object, callers: list[Any]) -> list[str]:
    """Why the framework cannot call some of ``plugin``'s implementations, one per hook."""
    problems = []
    for caller in callers:
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            if impl.wrapper or impl.hookwrapper:
                kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                why = _WHY_NOT.format(consequence="a wrapper would see coroutines, not results")
                problems.append(
                    f"its {caller.name} implementation is a hook wrapper ({kind}),"
                    f" which is not supported: {why}"
                )
            elif caller.spec is not None and caller.spec.opts.get("firstresult"):
                why = _WHY_NOT.format(
                    consequence="the first result would be a coroutine, not a result"
                )
                problems.append(
                    f"it implements {caller.name}, a firstresult hook, which is not"
                    f" supported: {why}"
                )
    return problems


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _trace_enabled() -> bool:
    return os.environ.get(TRACE_ENV, "").strip() not in ("", "0")


def _allowed_names() -> set[str] | None:
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}
