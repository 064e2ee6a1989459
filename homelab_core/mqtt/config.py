"""``[mqtt]``: the MQTT exporter's settings (docs/home-assistant.md).

Read when the file is; importing this module imports no MQTT client.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs

from ..options import option

#: URL schemes of a broker: plain TCP, or TLS.
SCHEMES = {"mqtt": 1883, "mqtts": 8883}
_TOPIC_TEXT = re.compile(r"[^+#\x00]+")
_text_list = attrs.validators.deep_iterable(attrs.validators.instance_of(str))


def broker_url_problem(value: str) -> str | None:
    """What keeps ``value`` from being a broker URL (``mqtt://host[:port]`` or
    ``mqtts://...``), or None when it is one. The MQTT plugin type checks its ``url`` by
    this rule too."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError:
        return "its port is not a number between 0 and 65535"
    if parts.scheme not in SCHEMES:
        return "the scheme must be mqtt:// or mqtts:// (TLS)"
    if not parts.hostname:
        return "it names no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "a broker URL has no path or query"
    return None


def _broker_url(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    problem = broker_url_problem(value) if value else None
    if problem:
        raise ValueError(
            f"'{attribute.name}' must be a broker URL such as mqtt://broker:1883 or"
            f" mqtts://broker:8883: {problem}"
        )


def _topic_base(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if not _TOPIC_TEXT.fullmatch(value) or value.startswith("/") or value.endswith("/"):
        raise ValueError(
            f"'{attribute.name}' must be a topic without wildcards (+, #) that neither starts"
            f" nor ends with '/', such as 'homelab'; got {value!r}"
        )
    if "//" in value:
        raise ValueError(f"'{attribute.name}' has an empty topic level: {value!r}")


def _readable_file(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not Path(value).is_file():
        raise ValueError(f"'{attribute.name}': no file {value!r}")


def _patterns(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    for entry in value:
        if not entry.strip():
            raise ValueError(
                f"'{attribute.name}' has an empty entry; write a name or a pattern such as 'web-*'"
            )


@attrs.define
class MqttSettings:
    """``[mqtt]``: publish every series to an MQTT broker, with Home Assistant discovery,
    and take Home Assistant's commands back. Off while ``url`` is empty."""

    url: str = option(
        "",
        description="The broker: mqtt://host:1883, or mqtts://host:8883 for TLS ('': no"
        " exporter). A user and password in the URL are used like username and password.",
        validator=_broker_url,
    )
    username: str = option("", description="The user to log in as ('': the URL's, or none).")
    password: str = option("", description="The password of username.", secret=True)
    ca_file: str = option(
        "",
        description="For mqtts: a PEM file of the CAs to trust ('': the system's).",
        validator=_readable_file,
    )
    tls_verify: bool = option(
        True, description="For mqtts: check the broker's certificate and host name."
    )
    client_id: str = option(
        "", description="The MQTT client id ('': homelab-<node name>, unique per node)."
    )
    base_topic: str = option(
        "homelab",
        description="The first levels of every topic of this hub's states and commands.",
        validator=_topic_base,
    )
    discovery: bool = option(True, description="Publish Home Assistant discovery configs.")
    discovery_prefix: str = option(
        "homeassistant",
        description="Home Assistant's discovery prefix (its MQTT integration's setting).",
        validator=_topic_base,
    )
    instances: list[str] = option(
        factory=lambda: ["*"],
        description="Instance ids or shell patterns ('web-*') of the instances published.",
        validator=[_text_list, _patterns],
    )
    metrics: list[str] = option(
        factory=lambda: ["*"],
        description="Metric names or shell patterns ('cpu.*') of the series published.",
        validator=[_text_list, _patterns],
    )
    min_interval: float = option(
        10.0,
        description="Seconds between two states of one series at least; values in between"
        " are left out (0: every value).",
        minimum=0,
    )
    commands: bool = option(
        True,
        description="Take commands: each instance's switch (enable, disable) and button (run now).",
    )
    queue_size: int = option(
        10_000,
        description="States that may wait while the broker is slow or away; past that the"
        " oldest are dropped (counted).",
        minimum=1,
    )
    keepalive: int = option(
        30,
        description="Seconds between keep-alive pings; the broker sends the will after 1.5"
        " times this without news.",
        minimum=5,
        maximum=65535,
    )
    reconnect_max: float = option(
        30.0,
        description="The longest pause in seconds between two attempts to reach the broker"
        " (pauses double from 0.5 s).",
        exclusive_minimum=0,
    )

    @property
    def enabled(self) -> bool:
        """Whether an exporter runs: a broker is configured."""
        return bool(self.url)

    @property
    def host(self) -> str:
        """The broker's host name or address."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The broker's port (1883, or 8883 for TLS, when the URL names none)."""
        parts = urlsplit(self.url)
        return parts.port or SCHEMES.get(parts.scheme, 1883)

    @property
    def tls(self) -> bool:
        """Whether the broker is reached over TLS (``mqtts://``)."""
        return urlsplit(self.url).scheme == "mqtts"

    def credentials(self) -> tuple[str | None, str | None]:
        """The user and password to log in with: the options, else the URL's."""
        parts = urlsplit(self.url)
        user = self.username or (unquote(parts.username) if parts.username else "")
        password = self.password or (unquote(parts.password) if parts.password else "")
        return (user or None, password or None)
