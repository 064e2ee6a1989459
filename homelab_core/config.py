"""Settings: ``homelab.toml`` plus ``HOMELAB_*`` environment overrides.

Sections: ``[server]``, ``[database]``, ``[cache]``, ``[retention]``, ``[scheduler]``,
``[store]`` and one ``[plugins.<instance_id>]`` table per plugin instance. Every key of the
fixed sections can be set from the environment as ``HOMELAB_<SECTION>_<KEY>`` (for example
``HOMELAB_DATABASE_URL``); instance keys as ``HOMELAB_PLUGINS__<ID>__<KEY>``.
``HOMELAB_API_TOKEN`` is a short form of ``HOMELAB_SERVER_API_TOKEN``.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from .errors import ConfigError
from .options import build_config, option
from .plugin import SLUG

CONFIG_ENV = "HOMELAB_CONFIG"
DEFAULT_CONFIG_FILE = "homelab.toml"
DEFAULT_DATABASE_URL = "sqlite://homelab.db"


@attrs.define
class ServerSettings:
    """``[server]``: where the web server listens and how it authenticates."""

    host: str = option("127.0.0.1", description="Address to bind.")
    port: int = option(8765, description="Port to bind.")
    api_token: str = option("", description="Bearer token for the API.", secret=True)
    auth: Literal["writes", "all"] = option(
        "writes", description="'writes': token guards changes; 'all': reads too."
    )


@attrs.define
class DatabaseSettings:
    """``[database]``: the store's database URL (SQLite file or PostgreSQL)."""

    url: str = option(DEFAULT_DATABASE_URL, description="Tortoise database URL.", secret=False)


@attrs.define
class CacheSettings:
    """``[cache]``: where latest values and health live."""

    backend: Literal["memory"] = option("memory", description="Cache backend.")


@attrs.define
class RetentionSettings:
    """``[retention]``: how long each tier of history is kept, in days."""

    raw_days: float = option(7.0, description="Days of raw samples.")
    minute_days: float = option(90.0, description="Days of 1-minute rollups.")
    hour_days: float = option(730.0, description="Days of 1-hour rollups.")
    executions_days: float = option(14.0, description="Days of execution records.")
    maintenance_interval: float = option(60.0, description="Seconds between rollup passes.")


@attrs.define
class SchedulerSettings:
    """``[scheduler]``: limits shared by every instance."""

    concurrency: int = option(64, description="Runs allowed at the same time.")
    default_timeout: float = option(30.0, description="Seconds a run may take by default.")
    failure_threshold: int = option(3, description="Consecutive failures before 'failing'.")
    max_backoff: float = option(300.0, description="Longest wait, in seconds, after failures.")
    jitter: float = option(1.0, description="Largest random start delay, in seconds.")
    setup_retry: list[float] = option(
        factory=lambda: [5.0, 10.0, 20.0, 40.0, 80.0],
        description="Waits between setup attempts; the last repeats.",
    )


@attrs.define
class StoreSettings:
    """``[store]``: the write queue between collection and the database."""

    queue_size: int = option(500_000, description="Samples held before new ones are dropped.")
    batch_size: int = option(20_000, description="Most samples written in one transaction.")
    flush_interval: float = option(1.0, description="Longest wait, in seconds, before a write.")


@attrs.frozen
class InstanceSettings:
    """One ``[plugins.<id>]`` table: a configured instance of a plugin type."""

    id: str
    type: str
    enabled: bool = True
    interval: float | None = None
    timeout: float | None = None
    options: dict[str, Any] = attrs.field(factory=dict)


_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "database": DatabaseSettings,
    "cache": CacheSettings,
    "retention": RetentionSettings,
    "scheduler": SchedulerSettings,
    "store": StoreSettings,
}
_INSTANCE_KEYS = {"type", "enabled", "interval", "timeout"}


@attrs.define
class Settings:
    """All settings of a hub. Build with :func:`load_settings` or directly in code."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    database: DatabaseSettings = attrs.field(factory=DatabaseSettings)
    cache: CacheSettings = attrs.field(factory=CacheSettings)
    retention: RetentionSettings = attrs.field(factory=RetentionSettings)
    scheduler: SchedulerSettings = attrs.field(factory=SchedulerSettings)
    store: StoreSettings = attrs.field(factory=StoreSettings)
    plugins: dict[str, InstanceSettings] = attrs.field(factory=dict)
    #: The file these settings came from, for error messages; None when built in code.
    source: str | None = None

    @classmethod
    def default(cls) -> Settings:
        """The embedded defaults: SQLite in the working directory and the ``system`` plugin."""
        return cls(plugins={"system": InstanceSettings(id="system", type="system")})


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read settings from ``path`` (or ``$HOMELAB_CONFIG``, or ``./homelab.toml``).

    With no file at all, the embedded defaults apply (:meth:`Settings.default`). A path
    given explicitly must exist.
    """
    env = os.environ if environ is None else environ
    explicit = path if path is not None else env.get(CONFIG_ENV)
    file = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    if explicit and not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    data: dict[str, Any] = {}
    source: str | None = None
    if file.is_file():
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=source) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not UTF-8 text: {exc}", file=source) from None
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", file=source) from None
    else:
        # No file: the embedded defaults, which the environment may still adjust.
        data["plugins"] = {i.id: {"type": i.type} for i in Settings.default().plugins.values()}
    _apply_environment(data, env)
    return settings_from_mapping(data, source=source)


def settings_from_mapping(data: Mapping[str, Any], *, source: str | None = None) -> Settings:
    """Validate a parsed ``homelab.toml`` mapping into :class:`Settings`."""
    where = source or "<settings>"
    unknown = sorted(set(data) - set(_SECTIONS) - {"plugins"})
    if unknown:
        raise ConfigError(
            f"unknown section; expected one of {', '.join([*_SECTIONS, 'plugins'])}",
            file=where,
            table=unknown[0],
        )
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError("must be a table", file=where, table=name)
        sections[name] = build_config(cls, table, file=where, table=name)
    plugins = _instances(data.get("plugins") or {}, where)
    return Settings(**sections, plugins=plugins, source=source)


def _instances(table: Any, where: str) -> dict[str, InstanceSettings]:
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table of [plugins.<id>] tables", file=where, table="plugins")
    result: dict[str, InstanceSettings] = {}
    for instance_id, body in table.items():
        name = f"plugins.{instance_id}"
        if not SLUG.fullmatch(instance_id):
            raise ConfigError(
                "instance id must be a lowercase slug (letters, digits, '_', '-')",
                file=where,
                table=name,
            )
        if not isinstance(body, Mapping):
            raise ConfigError("must be a table", file=where, table=name)
        kind = body.get("type", instance_id)
        if not isinstance(kind, str):
            raise ConfigError("expected a plugin type name", file=where, table=name, field="type")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ConfigError(
                f"expected true or false, got {enabled!r}", file=where, table=name, field="enabled"
            )
        durations = {}
        for key in ("interval", "timeout"):
            value = body.get(key)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigError(
                    f"expected a positive number of seconds, got {value!r}",
                    file=where,
                    table=name,
                    field=key,
                )
            durations[key] = float(value) if value is not None else None
        options = {k: v for k, v in body.items() if k not in _INSTANCE_KEYS}
        result[instance_id] = InstanceSettings(
            id=instance_id, type=kind, enabled=enabled, options=options, **durations
        )
    return result


_PLUGIN_ENV = re.compile(r"^HOMELAB_PLUGINS__([A-Za-z0-9_-]+)__([A-Za-z0-9_]+)$")


def _apply_environment(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """Overlay ``HOMELAB_*`` variables onto ``data``, parsing values as TOML when they can."""
    token = env.get("HOMELAB_API_TOKEN")
    if token is not None:
        data.setdefault("server", {})["api_token"] = token
    for key, raw in env.items():
        if not key.startswith("HOMELAB_"):
            continue
        match = _PLUGIN_ENV.match(key)
        if match:
            instance_id, field = match.group(1).lower(), match.group(2).lower()
            table = _table(_table(data, "plugins", key), instance_id, key)
            # Instance options stay text: they are parsed to each field's type later.
            table[field] = _env_value(raw) if field in _INSTANCE_KEYS else raw
            continue
        rest = key[len("HOMELAB_") :].lower()
        section, _, field = rest.partition("_")
        if section in _SECTIONS and field:
            types = attrs.resolve_types(_SECTIONS[section])
            known = attrs.fields_dict(types).get(field)
            text = known is not None and known.type is str
            _table(data, section, key)[field] = raw if text else _env_value(raw)


def _table(data: dict[str, Any], name: str, variable: str) -> dict[str, Any]:
    table = data.setdefault(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"must be a table to apply ${variable}", table=name)
    return table


def _env_value(raw: str) -> Any:
    """``8080`` -> 8080, ``true`` -> True, ``[1, 2]`` -> [1, 2]; anything else stays text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
