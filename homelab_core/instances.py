"""Building plugin instances from their settings: the type they name and their options.

Used by the hub when it starts and by the CLI (``homelab run``, ``check-config``), so that
both refuse exactly the same configurations with the same messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .config import NO_FILE, InstanceSettings, Settings
from .errors import ConfigError
from .model import TypeInfo
from .options import build_config
from .plugin import Plugin


def plugin_type_for(
    types: Mapping[str, type[Plugin]], settings: InstanceSettings, source: str | None = None
) -> type[Plugin]:
    """The installed type an instance names, or a :class:`ConfigError` pointing at it."""
    plugin_type = types.get(settings.type)
    if plugin_type is None:
        raise ConfigError(
            f"unknown plugin type {settings.type!r}; installed types:"
            f" {', '.join(sorted(types)) or 'none'}",
            file=source or NO_FILE,
            table=f"plugins.{settings.id}",
            field="type",
        )
    return plugin_type


def build_instance(
    settings: InstanceSettings,
    plugin_type: type[Plugin],
    *,
    default_timeout: float,
    source: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> tuple[Plugin, float, float]:
    """Validate an instance's options and create its plugin object.

    ``overrides`` are ``--set key=value`` strings, parsed to the field types.
    :return: the plugin, its interval and its timeout.
    """
    table = f"plugins.{settings.id}"
    where = source or NO_FILE
    options = {**settings.options, **(overrides or {})}
    # Text from the environment or --set is parsed to each field's type; TOML values are not.
    text_fields = {*settings.from_environment, *(overrides or {})}
    try:
        config: Any = build_config(
            plugin_type.Config, options, file=where, table=table, text_fields=text_fields
        )
    except ConfigError as exc:
        variable = settings.from_environment.get(exc.field or "")
        if variable is None or exc.field in (overrides or {}):
            raise
        raise exc.set_by(variable) from None
    interval = settings.interval or float(plugin_type.default_interval)
    timeout = settings.timeout or plugin_type.default_timeout or min(default_timeout, interval)
    return plugin_type(config, instance_id=settings.id), interval, timeout


@attrs.define
class Instance:
    """What the hub keeps of an instance: its settings, its type and its plugin object.

    Its state, health and enabled flag belong to the scheduler, its history to the store.
    """

    settings: InstanceSettings
    plugin_type: type[Plugin]
    plugin: Plugin
    interval: float
    timeout: float
    #: The type's metadata, described once (every listing of instances shows it).
    type_info: TypeInfo
    #: ``file`` (owned by homelab.toml) or ``api`` (created through the API, owned by the
    #: store).
    source: str = "file"


def build_instances(settings: Settings, types: Mapping[str, type[Plugin]]) -> dict[str, Instance]:
    """Every instance of ``settings``, validated; the first bad one is a :class:`ConfigError`."""
    built = {}
    for instance_id, inst in settings.plugins.items():
        plugin_type = plugin_type_for(types, inst, settings.source)
        plugin, interval, timeout = build_instance(
            inst,
            plugin_type,
            default_timeout=settings.scheduler.default_timeout,
            source=settings.source,
        )
        info = plugin_type.describe()
        built[instance_id] = Instance(inst, plugin_type, plugin, interval, timeout, info)
    return built
