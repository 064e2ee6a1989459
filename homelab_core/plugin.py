"""The :class:`Plugin` base class that every plugin type derives from."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, get_args, get_origin

import attrs
from typing_extensions import TypeVar

from . import clock
from .model import HealthReport, Metric, TypeInfo
from .options import NoConfig

#: What plugin type names and instance ids look like (use ``fullmatch``).
SLUG = re.compile(r"[a-z][a-z0-9_-]{0,62}")

#: The type of ``self.config``; a bare ``Plugin`` is ``Plugin[Any]``.
ConfigT = TypeVar("ConfigT", default=Any)


class Plugin(Generic[ConfigT]):
    """Base class of plugin types.

    Subclasses set the class attributes, name their options class (an attrs class) as the
    type argument, and implement ``collect()``. ``class Router(Plugin[RouterConfig])`` types
    ``self.config`` as ``RouterConfig`` for type checkers and sets ``Config``, the class the
    framework validates options with. Setting ``Config`` by hand still works; a bare
    ``Plugin`` is ``Plugin[Any]``, and without a ``Config`` its type takes no options.

    ``setup()``, ``collect()``, ``health()`` and ``teardown()`` may each be ``async def`` or
    plain ``def``: plain methods run in a worker thread, so blocking I/O there does not stall
    the scheduler.

    One object is created per configured instance; it keeps whatever state it needs
    between runs (previous counters, open clients) on ``self``.
    """

    #: Type id: a slug, unique among installed plugins (``[plugins.x] type = "<name>"``).
    name: ClassVar[str]
    #: Human title of the type.
    title: ClassVar[str] = ""
    #: Category used to group types in listings ("system", "network", "service", ...).
    category: ClassVar[str] = "other"
    #: One-sentence description of what the type reports.
    description: ClassVar[str] = ""
    #: Version of the plugin type.
    version: ClassVar[str] = "0.0.0"
    #: Seconds between runs unless an instance sets ``interval``.
    default_interval: ClassVar[float] = 60.0
    #: Seconds one run may take unless an instance sets ``timeout``; None: the scheduler's.
    default_timeout: ClassVar[float | None] = None
    #: The attrs class that holds and validates an instance's options. Taken from the type
    #: argument (``Plugin[RouterConfig]``) when the class does not set it.
    Config: ClassVar[type] = NoConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Take ``Config`` from the type argument, so the options class is named once."""
        super().__init_subclass__(**kwargs)
        declared = _bound_config(cls)
        if "Config" not in cls.__dict__ and _is_config_class(declared):
            cls.Config = declared

    def __init__(self, config: ConfigT, *, instance_id: str) -> None:
        self.config: ConfigT = config
        self.instance_id = instance_id
        self.log = logging.getLogger(f"homelab.plugin.{instance_id}")

    def now(self) -> float:
        """Wall-clock seconds since the epoch, as the framework sees them.

        Use this (not ``time.time()``) for times a plugin reports or computes with: a
        test's :class:`homelab_core.testing.Clock` controls it.
        """
        return clock.wall()

    def monotonic(self) -> float:
        """Monotonic seconds, as the framework sees them.

        Plugins that compute rates (a counter's change per second between two runs)
        should measure the elapsed time with this rather than ``time.monotonic()``, so
        that a test can advance the clock instead of sleeping.
        """
        return clock.monotonic()

    def setup(self) -> Any:
        """Prepare the instance (open clients, read baselines). Raise to have it retried."""
        return None

    def collect(self) -> Iterable[Metric] | Any:
        """Take one set of measurements and return them as :class:`Metric` objects."""
        raise NotImplementedError(f"plugin type {self.name!r} does not implement collect()")

    def health(self) -> HealthReport | Any | None:
        """Judge the last collection; None lets the framework judge by success or failure."""
        return None

    def teardown(self) -> Any:
        """Release what ``setup()`` acquired; called when the instance stops."""
        return None

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the type's ``Config`` (descriptions, defaults, secrets)."""
        from .options import config_schema

        return config_schema(cls.Config)

    @classmethod
    def describe(cls) -> TypeInfo:
        """The type's metadata."""
        return TypeInfo(
            name=cls.name,
            title=cls.title or cls.name,
            category=cls.category,
            description=cls.description,
            version=cls.version,
            default_interval=cls.default_interval,
        )


def _is_config_class(obj: Any) -> bool:
    return isinstance(obj, type) and obj is not Any  # Any is a class since Python 3.11


def _bound_config(cls: type) -> Any:
    """What ``cls``'s own bases bind ``ConfigT`` to: a class, a type variable, or None.

    Follows generic intermediate classes: with ``class Base(Plugin[C], Generic[C])``,
    ``class Child(Base[ChildConfig])`` binds ``ChildConfig``.
    """
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = get_origin(base)
        if not (isinstance(origin, type) and issubclass(origin, Plugin)):
            continue
        args = get_args(base)
        if origin is Plugin:
            return args[0] if args else None
        inner = _bound_config(origin)
        parameters = getattr(origin, "__parameters__", ())
        if isinstance(inner, TypeVar) and inner in parameters and len(args) == len(parameters):
            return args[parameters.index(inner)]
        return inner
    return None


def declared_config(cls: type[Plugin]) -> type | None:
    """The config class named as ``cls``'s type argument (``Plugin[X]``), if any.

    The nearest class of the MRO that binds the argument decides, so a subclass of
    ``Http(Plugin[HttpConfig])`` declares ``HttpConfig`` too.
    """
    for klass in cls.__mro__:
        if klass is Plugin or not (isinstance(klass, type) and issubclass(klass, Plugin)):
            continue
        bound = _bound_config(klass)
        if bound is not None:
            return bound if _is_config_class(bound) else None
    return None


def registered_class_problems(obj: type, base: type, method: str) -> list[str]:
    """What a class registered by a hook (a plugin or a notifier type) must have: a slug
    ``name``, its own ``method``, and an attrs ``Config``."""
    problems = []
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        problems.append(
            f"{obj.__qualname__}.name must be a lowercase slug (letters, digits, '_', '-'),"
            f" got {name!r}"
        )
    if getattr(obj, method) is getattr(base, method):
        problems.append(f"{obj.__qualname__} does not implement {method}()")
    config = getattr(obj, "Config", None)
    if not (isinstance(config, type) and attrs.has(config)):
        problems.append(f"{obj.__qualname__}.Config must be an attrs class")
    return problems


def validate_plugin_type(obj: Any) -> list[str]:
    """Problems that keep ``obj`` from being a usable plugin type (empty when none)."""
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        return [f"{obj!r} is not a subclass of homelab_core.Plugin"]
    problems = registered_class_problems(obj, Plugin, "collect")
    declared = declared_config(obj)
    if declared is not None and not (
        isinstance(obj.Config, type) and issubclass(obj.Config, declared)
    ):
        problems.append(
            f"{obj.__qualname__}.Config is {_qualname(obj.Config)} but the class is declared"
            f" as Plugin[{_qualname(declared)}]; drop the Config attribute or make them agree"
        )
    interval = obj.default_interval
    if not isinstance(interval, int | float) or interval <= 0:
        problems.append(f"{obj.__qualname__}.default_interval must be a positive number")
    return problems


def _qualname(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)
