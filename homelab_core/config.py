"""Settings: ``homelab.toml`` plus ``HOMELAB_*`` environment overrides.

Sections: ``[server]``, ``[database]``, ``[cache]``, ``[bus]``, ``[node]``, ``[retention]``,
``[scheduler]``, ``[store]``, ``[status_page]``, ``[mqtt]``, one ``[plugins.<instance_id>]``
table per plugin instance, and the alerting tables ``[alerting]``, ``[alerts.<id>]``,
``[notifiers.<id>]``, ``[routes.<id>]`` and ``[maintenance.<id>]``
(:mod:`homelab_core.alerts.config`). Every key of the
fixed sections can be set from the environment as ``HOMELAB_<SECTION>_<KEY>`` (for example
``HOMELAB_DATABASE_URL``); instance keys as ``HOMELAB_PLUGINS__<ID>__<KEY>``.
``HOMELAB_API_TOKEN`` is a short form of ``HOMELAB_SERVER_API_TOKEN``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import attrs

from .alerts.config import SECTIONS as ALERT_SECTIONS
from .alerts.config import AlertsConfig, parse_alerts_config
from .errors import ConfigError
from .mqtt.config import MqttSettings
from .options import build_config, option
from .plugin import SLUG

CONFIG_ENV = "HOMELAB_CONFIG"
DEFAULT_CONFIG_FILE = "homelab.toml"
DEFAULT_DATABASE_URL = "sqlite://homelab.db"
#: Stands for the file in messages about settings that came from no file.
NO_FILE = "<no config file>"
#: URL schemes the store can use: SQLite, or PostgreSQL through asyncpg.
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "asyncpg")

#: The default memory budget of the WebSocket replay buffer, in bytes (8 MiB).
WEBSOCKET_REPLAY_BYTES = 8 * 1024 * 1024
#: The default memory budget of one WebSocket client's queue, in bytes (4 MiB).
WEBSOCKET_QUEUE_BYTES = 4 * 1024 * 1024

#: ``[scheduler] max_samples_per_run``: twice the ``prometheus`` plugin's own default
#: ``max_samples`` (10,000), and far above the ``system`` plugin on a big machine (256
#: CPUs, 1,000 network interfaces and 500 mounts make about 8,300).
DEFAULT_MAX_SAMPLES_PER_RUN = 20_000
#: ``[scheduler] max_series``: room for a full run at the sample limit, and as much again
#: for label values that come and go (containers, interfaces, mounts) until a restart.
DEFAULT_MAX_SERIES = 50_000

_positive = attrs.validators.gt(0)


def _database_url(_: Any, __: attrs.Attribute[str], value: str) -> None:
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in DATABASE_SCHEMES:
        raise ValueError(
            f"'url' must be a database URL starting with one of"
            f" {', '.join(s + '://' for s in DATABASE_SCHEMES)}; got {value.split(':', 1)[0]!r}"
        )


#: A host name or address, with an optional port: ``homelab.lan``, ``10.0.0.5:8080``,
#: ``[fd00::5]:8765`` (an IPv6 address without a port may also be written bare).
_HOST_ENTRY = re.compile(r"^(?:\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?)(?::\d{1,5})?$")
#: An origin as browsers send it: ``scheme://host[:port]``, nothing after it.
_ORIGIN_ENTRY = re.compile(
    r"^[a-z][a-z0-9+.-]*://(?:\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)(?::\d{1,5})?$"
)


def _host_entries(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for entry in value:
        if entry == "*" or _HOST_ENTRY.match(entry.lower()) or _is_address(entry):
            continue
        raise ValueError(
            f"{entry!r} is not a host name, an address or '*' (write homelab.lan or"
            " homelab.lan:8765, without a scheme or a path)",
            attribute,
        )


def _origin_entries(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for entry in value:
        if entry == "*" or _ORIGIN_ENTRY.match(entry.lower()):
            continue
        raise ValueError(
            f"{entry!r} is not an origin or '*' (write scheme://host or scheme://host:port,"
            " such as https://dashboard.lan, without a path)",
            attribute,
        )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


_text_list = attrs.validators.deep_iterable(attrs.validators.instance_of(str))


@attrs.define
class ServerSettings:
    """``[server]``: where the web server listens and how it authenticates."""

    host: str = option("127.0.0.1", description="Address to bind.")
    port: int = option(
        8765,
        description="Port to bind.",
        minimum=1,
        maximum=65535,
    )
    api_token: str = option("", description="Bearer token for the API.", secret=True)
    auth: Literal["writes", "all"] = option(
        "writes", description="'writes': token guards changes; 'all': reads too."
    )
    websocket_compression: bool = option(
        False, description="Accept permessage-deflate on /ws/metrics when a client offers it."
    )
    websocket_queue_size: int = option(
        1024,
        description="Messages a WebSocket client may have waiting before events are dropped.",
        minimum=2,
    )
    websocket_queue_bytes: int = option(
        WEBSOCKET_QUEUE_BYTES,
        description="Bytes of messages a WebSocket client may have waiting before events are"
        " dropped.",
        minimum=1,
    )
    websocket_replay_size: int = option(
        10_000,
        description="Events kept for WebSocket clients that resume.",
        minimum=1,
    )
    websocket_replay_bytes: int = option(
        WEBSOCKET_REPLAY_BYTES,
        description="Bytes of encoded events kept for WebSocket clients that resume.",
        minimum=1,
    )
    websocket_heartbeat: float = option(
        20.0, description="Idle seconds before a WebSocket heartbeat.", exclusive_minimum=0
    )
    allowed_hosts: list[str] = option(
        factory=list,
        description="Host names (name or name:port) the server answers besides its own; '*' any.",
        validator=[_text_list, _host_entries],
    )
    allowed_origins: list[str] = option(
        factory=list,
        description="Origins (scheme://host[:port]) of web pages allowed to change things and"
        " open /ws/metrics, besides the server's own; '*' any.",
        validator=[_text_list, _origin_entries],
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_problem(server: ServerSettings, *, insecure: bool) -> str | None:
    """Why ``homelab serve`` must not start with these settings, or None."""
    if server.auth == "all" and not server.api_token:
        return '[server] auth = "all" needs an api_token (or HOMELAB_API_TOKEN)'
    if not server.api_token and not is_loopback(server.host) and not insecure:
        return (
            f"refusing to serve on {server.host}, beyond loopback, without an API token:"
            " anyone who can reach it could change your plugins. Set [server] api_token or"
            " HOMELAB_API_TOKEN, bind to 127.0.0.1, or pass --insecure if the network is"
            " trusted."
        )
    return None


@attrs.define
class DatabaseSettings:
    """``[database]``: the store's database URL (SQLite file or PostgreSQL)."""

    url: str = option(
        DEFAULT_DATABASE_URL,
        description="sqlite://<path> or postgres://user:password@host:port/database.",
        validator=_database_url,
    )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL; None for other databases and ``:memory:``."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    path = unquote(parts.netloc + parts.path)
    return None if path == ":memory:" else Path(path)


def database_problem(url: str) -> str | None:
    """Why the store cannot open this database before even trying (a SQLite file whose
    directory does not exist, which SQLite would wait on forever), or None."""
    path = sqlite_path(url)
    if path is not None and not path.parent.is_dir():
        return f"cannot open the store at {path}: directory {str(path.parent)!r} does not exist"
    return None


def _redis_url(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"'{attribute.name}' must be a Redis URL: redis://host:port/db, rediss://... (TLS)"
            f" or unix:///path/to/redis.sock; got {value!r}"
        )


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@attrs.define
class CacheSettings:
    """``[cache]``: where the latest values and the health of every instance live."""

    backend: Literal["memory", "redis"] = option(
        "memory",
        description="'memory': in this process; 'redis': in Redis, shared by every node.",
    )
    url: str = option(
        DEFAULT_REDIS_URL, description="The Redis server of backend 'redis'.", validator=_redis_url
    )


@attrs.define
class BusSettings:
    """``[bus]``: how events reach their subscribers."""

    backend: Literal["memory", "redis"] = option(
        "memory",
        description="'memory': within this process; 'redis': every node's events reach every"
        " node (a Redis stream).",
    )
    url: str = option(
        DEFAULT_REDIS_URL, description="The Redis server of backend 'redis'.", validator=_redis_url
    )
    stream_length: int = option(
        100_000,
        description="Events the Redis stream keeps (about), for nodes that fall behind.",
        minimum=1000,
    )


def _node_name(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not SLUG.fullmatch(value):
        raise ValueError(
            f"'{attribute.name}' must be a lowercase slug (letters, digits, '_', '-'),"
            f" starting with a letter; got {value!r}"
        )


def default_node_name() -> str:
    """This host's name as a node name: lowercased, other characters as '-'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"node-{name}".rstrip("-")
    return name[:63]


@attrs.define
class NodeSettings:
    """``[node]``: this process as a node of a cluster (docs/scale-out.md)."""

    name: str = option(
        "",
        description="This node's name ('': the host name, as default_node_name() makes it);"
        " instances with node = this name run only here.",
        validator=_node_name,
    )
    heartbeat: float = option(
        2.0, description="Seconds between two heartbeats in Redis.", exclusive_minimum=0
    )
    lease_ttl: float = option(
        10.0,
        description="Seconds a lease on an instance lasts unless renewed; a dead node's"
        " instances move after at most about twice this.",
        exclusive_minimum=0,
    )

    @property
    def node_name(self) -> str:
        """``name``, or the host's name when it is left empty."""
        return self.name or default_node_name()


@attrs.define
class RetentionSettings:
    """``[retention]``: how long each tier of history is kept, in days."""

    raw_days: float = option(
        7.0,
        description="Days of raw samples (then their 1-minute rollups are kept).",
        exclusive_minimum=0,
    )
    minute_days: float = option(90.0, description="Days of 1-minute rollups.", exclusive_minimum=0)
    hour_days: float = option(730.0, description="Days of 1-hour rollups.", exclusive_minimum=0)
    executions_days: float = option(
        14.0, description="Days of execution records.", exclusive_minimum=0
    )
    health_days: float = option(
        90.0,
        description="Days of health changes (the newest before that is always kept):"
        " the status page's uptime reads them.",
        exclusive_minimum=0,
    )
    maintenance_interval: float = option(
        60.0, description="Seconds between maintenance passes.", exclusive_minimum=0
    )


@attrs.define
class SchedulerSettings:
    """``[scheduler]``: limits shared by every instance."""

    concurrency: int = option(64, description="Runs allowed at the same time.", minimum=1)
    default_timeout: float = option(
        30.0, description="Seconds a run may take by default.", exclusive_minimum=0
    )
    failure_threshold: int = option(
        3, description="Consecutive failures before 'failing'.", minimum=1
    )
    max_backoff: float = option(
        300.0, description="Longest wait, in seconds, after failures.", exclusive_minimum=0
    )
    jitter: float = option(
        1.0,
        description="Largest random start delay, in seconds.",
        minimum=0,
    )
    setup_retry: list[float] = option(
        factory=lambda: [5.0, 10.0, 20.0, 40.0, 80.0],
        description="Waits between setup attempts; the last repeats.",
        validator=attrs.validators.deep_iterable(_positive),
    )
    teardown_timeout: float = option(
        10.0,
        description=(
            "Seconds an instance's teardown() may take when it stops, counting the wait for"
            " a run still blocked in its worker thread."
        ),
        exclusive_minimum=0,
    )
    loop_stall_threshold: float = option(
        0.5,
        description=(
            "Seconds the event loop may go without turning before the watchdog names the"
            " instance whose async code blocked it; 0 turns the watchdog off."
        ),
        minimum=0,
    )
    gc_threshold: int = option(
        50_000,
        description="Allocations between young garbage collections while a hub runs; 0 = Python's.",
        minimum=0,
    )
    max_samples_per_run: int = option(
        DEFAULT_MAX_SAMPLES_PER_RUN,
        description="Samples a run may return; a run with more is refused. 0 = no limit.",
        minimum=0,
    )
    max_series: int = option(
        DEFAULT_MAX_SERIES,
        description="Series an instance may have; samples of further new ones are dropped."
        " 0 = no limit.",
        minimum=0,
    )
    isolation: Literal["none", "process"] = option(
        "none",
        description="Where instances run unless they say: 'none' (in the hub's process) or"
        " 'process' (a worker process each).",
    )
    isolated_types: list[str] = option(
        factory=list,
        description="Plugin types whose instances run in a worker process unless they set"
        " isolation.",
    )
    worker_kill_grace: float = option(
        2.0,
        description="Seconds a worker process has to exit when stopped, and again after"
        " SIGTERM, before SIGKILL.",
        exclusive_minimum=0,
    )


@attrs.define
class StoreSettings:
    """``[store]``: the write queue between collection and the database."""

    queue_size: int = option(
        500_000, description="Samples held before new ones are dropped.", minimum=1
    )
    batch_size: int = option(
        20_000, description="Most samples written in one transaction.", minimum=1
    )
    flush_interval: float = option(
        1.0, description="Longest wait, in seconds, before a write.", exclusive_minimum=0
    )


@attrs.frozen
class InstanceSettings:
    """One ``[plugins.<id>]`` table: a configured instance of a plugin type."""

    id: str
    type: str
    enabled: bool = True
    interval: float | None = None
    timeout: float | None = None
    #: The node it is pinned to (it runs only there); None: any node, under a lease.
    node: str | None = None
    #: Limits of this instance; None takes the ``[scheduler]`` value (see ``limits.py``).
    max_samples_per_run: int | None = None
    max_series: int | None = None
    #: ``none`` or ``process``; None takes the ``[scheduler]`` default (:func:`isolation_for`).
    isolation: Literal["none", "process"] | None = None
    #: The worker process it shares with the instances that name the same one.
    worker: str | None = None
    #: Bytes of resident memory its worker process may hold; None: no limit.
    memory_limit: int | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    #: Options set from the environment, with the variable that set each. Their values
    #: are text, parsed to the option's type; options from the file must have the type.
    from_environment: dict[str, str] = attrs.field(factory=dict)


def _status_patterns(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for entry in value:
        if not entry.strip():
            raise ValueError("an entry is empty; write an instance id or a pattern such as 'web-*'")


@attrs.define
class StatusPageSettings:
    """``[status_page]``: the public status page (``/status``) and ``GET /api/status``."""

    enabled: bool = option(
        False,
        description="Serve /status and /api/status, readable without a token even with"
        " auth = 'all'.",
    )
    title: str = option("Status", description="The page's heading.")
    description: str = option("", description="A sentence under the heading; '' for none.")
    instances: list[str] = option(
        factory=lambda: ["*"],
        description="Instance ids or shell patterns ('web-*') of the instances shown, in the"
        " configuration's order.",
        validator=[_text_list, _status_patterns],
    )


#: The fixed sections of ``homelab.toml`` and the class of each.
SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "database": DatabaseSettings,
    "cache": CacheSettings,
    "bus": BusSettings,
    "node": NodeSettings,
    "retention": RetentionSettings,
    "scheduler": SchedulerSettings,
    "store": StoreSettings,
    "status_page": StatusPageSettings,
    "mqtt": MqttSettings,
}
_LIMIT_KEYS = ("max_samples_per_run", "max_series")
_ISOLATION_KEYS = ("isolation", "worker", "memory_limit")
_INSTANCE_KEYS = {"type", "enabled", "interval", "timeout", "node", *_LIMIT_KEYS, *_ISOLATION_KEYS}
#: The smallest memory_limit: a worker process needs about 25 MiB before any plugin.
MIN_MEMORY_LIMIT = 48 * 1024 * 1024
#: What a size looks like (a JSON Schema pattern too).
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([kKmMgGtT]([iI]?[bB])?|[bB])?\s*$"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any) -> int:
    """A size in bytes: a whole number of bytes, or a text with a unit (``"256MB"``,
    ``"256MiB"``, ``"256m"``, ``"1.5G"``); the units count in 1,024s, as systemd's and
    Docker's memory limits do.

    :raises ValueError: anything else, with what was expected.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or float(match[1]) <= 0:
        raise ValueError(
            f'expected a size such as "256MB" or "1GB" (or a number of bytes), got {value!r}'
        )
    return int(float(match[1]) * _SIZE_UNITS[(match[2] or "").lower()])


@attrs.frozen
class Isolation:
    """How an isolated instance runs: in which worker process, under which memory limit."""

    #: The shared worker's name; None: a worker of its own.
    worker: str | None = None
    #: Bytes of resident memory the worker may hold; None: no limit.
    memory_limit: int | None = None


def isolation_for(instance: InstanceSettings, scheduler: SchedulerSettings) -> Isolation | None:
    """Whether and how an instance runs in a worker process (None: in the hub's process).

    Its own ``isolation`` decides; without one, naming a ``worker`` or a ``memory_limit``
    means ``process``; otherwise ``[scheduler] isolated_types`` and then ``isolation``.
    """
    mode = instance.isolation
    if mode is None:
        if (
            instance.worker is not None
            or instance.memory_limit is not None
            or instance.type in scheduler.isolated_types
        ):
            mode = "process"
        else:
            mode = scheduler.isolation
    if mode != "process":
        return None
    return Isolation(instance.worker, instance.memory_limit)


@attrs.define
class Settings:
    """All settings of a hub. Build with :func:`load_settings` or directly in code."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    database: DatabaseSettings = attrs.field(factory=DatabaseSettings)
    cache: CacheSettings = attrs.field(factory=CacheSettings)
    bus: BusSettings = attrs.field(factory=BusSettings)
    node: NodeSettings = attrs.field(factory=NodeSettings)
    retention: RetentionSettings = attrs.field(factory=RetentionSettings)
    scheduler: SchedulerSettings = attrs.field(factory=SchedulerSettings)
    store: StoreSettings = attrs.field(factory=StoreSettings)
    status_page: StatusPageSettings = attrs.field(factory=StatusPageSettings)
    #: ``[mqtt]``: the MQTT exporter and Home Assistant (docs/home-assistant.md).
    mqtt: MqttSettings = attrs.field(factory=MqttSettings)
    plugins: dict[str, InstanceSettings] = attrs.field(factory=dict)
    #: ``[alerting]``, ``[alerts.<id>]``, ``[notifiers.<id>]``, ``[routes.<id>]`` and
    #: ``[maintenance.<id>]`` (docs/alerts.md).
    alerts: AlertsConfig = attrs.field(factory=AlertsConfig)
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
    origins = _apply_environment(data, env)
    return settings_from_mapping(data, source=source, origins=origins)


def settings_from_mapping(
    data: Mapping[str, Any],
    *,
    source: str | None = None,
    origins: Mapping[tuple[str, str], str] | None = None,
) -> Settings:
    """Validate a parsed ``homelab.toml`` mapping into :class:`Settings`.

    ``origins`` maps (table, key) to the environment variable that set the value, so that
    an error about it names the variable.
    """
    origins = origins or {}
    try:
        return _settings(data, source or NO_FILE, origins)
    except ConfigError as exc:
        variable = origins.get((exc.table or "", exc.field or ""))
        if variable is None:
            raise
        raise exc.set_by(variable) from None


def _settings(
    data: Mapping[str, Any], where: str, origins: Mapping[tuple[str, str], str]
) -> Settings:
    unknown = sorted(set(data) - set(SECTIONS) - {"plugins", *ALERT_SECTIONS})
    if unknown:
        raise ConfigError(
            "unknown section; expected one of"
            f" {', '.join([*SECTIONS, 'plugins', *ALERT_SECTIONS])}",
            file=where,
            table=unknown[0],
        )
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError("must be a table", file=where, table=name)
        sections[name] = build_config(cls, table, file=where, table=name)
    plugins = _instances(data.get("plugins") or {}, where, origins)
    alerts = parse_alerts_config(data, where)
    return Settings(
        **sections, plugins=plugins, alerts=alerts, source=None if where == NO_FILE else where
    )


def _instances(
    table: Any, where: str, origins: Mapping[tuple[str, str], str]
) -> dict[str, InstanceSettings]:
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table of [plugins.<id>] tables", file=where, table="plugins")
    result: dict[str, InstanceSettings] = {}
    for instance_id, body in table.items():
        result[instance_id] = instance_settings(instance_id, body, where=where, origins=origins)
    return result


def instance_settings(
    instance_id: str,
    body: Any,
    *,
    where: str | None,
    origins: Mapping[tuple[str, str], str] | None = None,
) -> InstanceSettings:
    """One ``[plugins.<id>]`` table checked (the file's, or a body of the API): the keys of
    the framework here, the options later against the type (``instances.build_instance``).
    Errors are :class:`ConfigError` naming ``where``, the table and the field."""
    origins = origins or {}
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
    limits: dict[str, int | None] = {}
    for key in _LIMIT_KEYS:
        value = body.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ConfigError(
                f"expected a whole number, 0 or more (0: no limit), got {value!r}",
                file=where,
                table=name,
                field=key,
            )
        limits[key] = value
    node = body.get("node")
    if node is not None and (not isinstance(node, str) or not SLUG.fullmatch(node)):
        raise ConfigError(
            f"expected a node name (a lowercase slug, as [node] name), got {node!r}",
            file=where,
            table=name,
            field="node",
        )
    isolation, worker, memory_limit = _isolation_keys(body, where, name, origins)
    options = {k: v for k, v in body.items() if k not in _INSTANCE_KEYS}
    from_environment = {k: origins[(name, k)] for k in options if (name, k) in origins}
    return InstanceSettings(
        id=instance_id,
        type=kind,
        enabled=enabled,
        options=options,
        from_environment=from_environment,
        interval=durations["interval"],
        timeout=durations["timeout"],
        node=node,
        max_samples_per_run=limits["max_samples_per_run"],
        max_series=limits["max_series"],
        isolation=isolation,
        worker=worker,
        memory_limit=memory_limit,
    )


def _isolation_keys(
    body: Mapping[str, Any], where: str | None, name: str, origins: Mapping[tuple[str, str], str]
) -> tuple[Any, str | None, int | None]:
    """An instance table's ``isolation``, ``worker`` and ``memory_limit``, checked."""

    def fail(field: str, message: str) -> ConfigError:
        error = ConfigError(message, file=where, table=name, field=field)
        variable = origins.get((name, field))
        return error.set_by(variable) if variable else error

    isolation = body.get("isolation")
    if isolation is not None and isolation not in ("none", "process"):
        raise fail("isolation", f"expected 'none' or 'process', got {isolation!r}")
    worker = body.get("worker")
    if worker is not None and (not isinstance(worker, str) or not SLUG.fullmatch(worker)):
        raise fail("worker", f"expected a worker name (a lowercase slug), got {worker!r}")
    raw = body.get("memory_limit")
    memory_limit = None
    if raw is not None:
        try:
            memory_limit = parse_size(raw)
        except ValueError as exc:
            raise fail("memory_limit", str(exc)) from None
        if memory_limit < MIN_MEMORY_LIMIT:
            raise fail(
                "memory_limit",
                f"{raw!r} is below the smallest limit, {MIN_MEMORY_LIMIT >> 20} MiB: a worker"
                " process needs about 25 MiB before it runs any plugin",
            )
    if isolation == "none":
        for key, value in (("worker", worker), ("memory_limit", raw)):
            if value is not None:
                raise fail(key, f"{key} needs isolation = 'process', and this instance says 'none'")
    return isolation, worker, memory_limit


_PLUGIN_ENV = re.compile(r"^HOMELAB_PLUGINS__([A-Za-z0-9_-]+)__([A-Za-z0-9_]+)$")


def _apply_environment(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Overlay ``HOMELAB_*`` variables onto ``data``; returns (table, key) -> variable.

    Values of fixed sections are parsed as TOML when they can be (``8080`` -> 8080) unless
    the key is text; instance options stay text and are parsed to their field's type later.
    """
    origins: dict[tuple[str, str], str] = {}
    token = env.get("HOMELAB_API_TOKEN")
    if token is not None:
        _table(data, "server", "HOMELAB_API_TOKEN")["api_token"] = token
        origins[("server", "api_token")] = "HOMELAB_API_TOKEN"
    for key, raw in env.items():
        if not key.startswith("HOMELAB_"):
            continue
        match = _PLUGIN_ENV.match(key)
        if match:
            instance_id, field = match.group(1).lower(), match.group(2).lower()
            table = _table(_table(data, "plugins", key), instance_id, key)
            table[field] = _env_value(raw) if field in _INSTANCE_KEYS else raw
            origins[(f"plugins.{instance_id}", field)] = key
            continue
        rest = key[len("HOMELAB_") :].lower()
        # The longest section name first: ``status_page_enabled`` is [status_page] enabled.
        section = max((n for n in SECTIONS if rest.startswith(f"{n}_")), key=len, default="")
        field = rest[len(section) + 1 :]
        if section and field:
            types = attrs.resolve_types(SECTIONS[section])
            known = attrs.fields_dict(types).get(field)
            text = known is not None and known.type is str
            _table(data, section, key)[field] = raw if text else _env_value(raw)
            origins[(section, field)] = key
    return origins


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
