"""The :class:`Plugin` base class that every plugin type derives from."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any, ClassVar

import attrs

from .model import HealthReport, Metric, TypeInfo
from .options import NoConfig

#: What plugin type names and instance ids look like (use ``fullmatch``).
SLUG = re.compile(r"[a-z][a-z0-9_-]{0,62}")


class Plugin:
    """Base class of plugin types.

    Subclasses set the class attributes, may define a ``Config`` attrs class, and implement
    ``collect()``. ``setup()``, ``collect()``, ``health()`` and ``teardown()`` may each be
    ``async def`` or plain ``def``: plain methods run in a worker thread, so blocking I/O
    there does not stall the scheduler.

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
    #: The attrs class that holds and validates an instance's options.
    Config: ClassVar[type] = NoConfig

    def __init__(self, config: Any, *, instance_id: str) -> None:
        self.config = config
        self.instance_id = instance_id
        self.log = logging.getLogger(f"homelab.plugin.{instance_id}")

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


def validate_plugin_type(obj: Any) -> list[str]:
    """Problems that keep ``obj`` from being a usable plugin type (empty when none)."""
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        return [f"{obj!r} is not a subclass of homelab_core.Plugin"]
    problems = []
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not SLUG.fullmatch(name):
        problems.append(
            f"{obj.__qualname__}.name must be a lowercase slug (letters, digits, '_', '-'),"
            f" got {name!r}"
        )
    if obj.collect is Plugin.collect:
        problems.append(f"{obj.__qualname__} does not implement collect()")
    if not attrs.has(obj.Config):
        problems.append(f"{obj.__qualname__}.Config must be an attrs class")
    interval = obj.default_interval
    if not isinstance(interval, int | float) or interval <= 0:
        problems.append(f"{obj.__qualname__}.default_interval must be a positive number")
    return problems
