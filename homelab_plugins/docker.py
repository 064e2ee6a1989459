"""The bundled ``docker`` plugin: state, health, restarts, CPU and memory of containers.

Talks to the Docker Engine API with httpx, over the engine's unix socket or a TCP URL:
``GET /containers/json`` lists the containers, ``GET /containers/{id}/json`` gives the
restart count and healthcheck status, and ``GET /containers/{id}/stats?stream=false`` one
stats reading of each running container. CPU and memory percentages are computed as the
``docker stats`` command computes them on Linux. An engine that cannot be reached is a
measurement (``docker.up`` 0 and a failing health), not a failure of the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import attrs

from homelab_core import HealthReport, HealthState, Metric, Plugin, hookimpl, option

from .http import url_credentials

if TYPE_CHECKING:  # httpx is imported when an instance starts, not with the plugin list
    import httpx

#: Base URL of requests sent over a unix socket (the host part is not used).
UNIX_BASE_URL = "http://docker"
#: Containers whose details and stats are fetched at the same time.
CONCURRENCY = 8
#: Container states the engine knows; ``docker.containers`` reports each of them.
STATES = ("created", "running", "paused", "restarting", "removing", "exited", "dead")


class EngineError(Exception):
    """The engine could not be reached or answered with an error."""


def engine_address(url: str) -> tuple[str, str | None]:
    """The httpx base URL and the unix socket path (or None) of a Docker host URL."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path = parts.path if not parts.netloc else f"/{parts.netloc}{parts.path}"
        return UNIX_BASE_URL, path
    if parts.scheme == "tcp":
        return f"http://{parts.netloc}", None
    return url.rstrip("/"), None


def _check_url(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme == "unix" and (parts.path or parts.netloc):
        return
    if parts.scheme in ("tcp", "http", "https") and parts.hostname:
        return
    raise ValueError(
        f"'{attribute.name}' must be unix:///path/to/docker.sock, tcp://host:port,"
        f" http://host:port or https://host:port, got {value!r}"
    )


@attrs.define
class DockerConfig:
    """Options of a ``docker`` instance."""

    url: str = option(
        "unix:///var/run/docker.sock",
        description="Docker Engine API address: unix:///path/to/docker.sock, tcp://host:2375"
        " or http(s)://host:port.",
        validator=_check_url,
    )
    request_timeout: float = option(
        10.0,
        description="Seconds each Engine API request may take (a stats reading takes about"
        " 1 s); keep it below the instance's timeout.",
        exclusive_minimum=0,
    )
    all: bool = option(True, description="Also report stopped containers.")
    include: list[str] = option(
        factory=list,
        description="Container-name shell patterns to report ('web-*'); empty reports all.",
    )
    exclude: list[str] = option(
        factory=list, description="Container-name shell patterns to skip; applied after include."
    )


def cpu_percent(stats: Mapping[str, Any]) -> float | None:
    """CPU use in percent of one CPU, from a stats reading, as the Docker CLI computes it.

    ``(container CPU time delta / host CPU time delta) * online CPUs * 100``, so a container
    that keeps two cores busy reports 200. None when the reading has no previous sample.
    """
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    total, pre_total = usage.get("total_usage"), (pre.get("cpu_usage") or {}).get("total_usage")
    system, pre_system = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    if total is None or pre_total is None or system is None or pre_system is None:
        return None
    online = cpu.get("online_cpus") or len(usage.get("percpu_usage") or ()) or 1
    cpu_delta, system_delta = total - pre_total, system - pre_system
    if system_delta <= 0 or cpu_delta <= 0:
        return 0.0
    return float(cpu_delta) / float(system_delta) * float(online) * 100.0


def memory_usage(stats: Mapping[str, Any]) -> tuple[float, float] | None:
    """Memory in use (page cache excluded, as the Docker CLI does) and the limit, in bytes."""
    memory = stats.get("memory_stats") or {}
    usage, limit = memory.get("usage"), memory.get("limit")
    if usage is None or limit is None:
        return None
    details = memory.get("stats") or {}
    # cgroup v1 reports total_inactive_file, cgroup v2 inactive_file.
    for key in ("total_inactive_file", "inactive_file"):
        cache = details.get(key)
        if cache is not None and cache < usage:
            return float(usage - cache), float(limit)
    return float(usage), float(limit)


def _network(stats: Mapping[str, Any]) -> tuple[int, int] | None:
    networks = stats.get("networks")
    if not networks:
        return None
    rx = sum(int(n.get("rx_bytes", 0)) for n in networks.values())
    tx = sum(int(n.get("tx_bytes", 0)) for n in networks.values())
    return rx, tx


def _container_name(summary: Mapping[str, Any]) -> str:
    names = summary.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(summary.get("Id", ""))[:12]


class Docker(Plugin[DockerConfig]):
    """Containers of a Docker engine."""

    name = "docker"
    title = "Docker containers"
    category = "service"
    description = "State, health, restarts, CPU and memory of the containers of a Docker engine."
    version = "1.0.0"
    default_interval = 30.0

    _client: httpx.AsyncClient | None = None
    _problem: str | None = None
    _summary: str = ""

    async def setup(self) -> None:
        """Open the HTTP client, on the engine's unix socket or its TCP address."""
        import httpx

        base_url, socket_path = engine_address(self.config.url)
        # Credentials in the URL go as basic auth, so that no logged URL holds them.
        base_url, in_url = url_credentials(base_url)
        transport = httpx.AsyncHTTPTransport(uds=socket_path) if socket_path is not None else None
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            auth=httpx.BasicAuth(*in_url) if in_url is not None else None,
            timeout=self.config.request_timeout,
        )

    async def _get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        import httpx

        assert self._client is not None
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            text = str(exc)
            raise EngineError(
                f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            ) from None
        if not response.is_success:
            try:
                message = response.json().get("message", "")
            except (ValueError, AttributeError):
                message = response.text[:200]
            raise EngineError(f"GET {path}: HTTP {response.status_code} {message}".rstrip())
        try:
            return response.json()
        except ValueError as exc:
            raise EngineError(f"GET {path}: the answer is not JSON ({exc})") from None

    def _wanted(self, name: str) -> bool:
        include, exclude = self.config.include, self.config.exclude
        if include and not any(fnmatchcase(name, p) for p in include):
            return False
        return not any(fnmatchcase(name, p) for p in exclude)

    async def collect(self) -> list[Metric]:
        """Take one reading of every selected container."""
        if self._client is None:
            raise RuntimeError("collect() called before setup()")
        self._problem = None
        try:
            listed = await self._get("/containers/json", {"all": "1" if self.config.all else "0"})
            if not isinstance(listed, list):
                raise EngineError("GET /containers/json: expected a list of containers")
        except EngineError as exc:
            self._problem = str(exc)
            return [Metric("docker.up", 0, device_class="connectivity")]
        containers = [c for c in listed if self._wanted(_container_name(c))]
        details: dict[str, tuple[Any, Any]] = {}
        limiter = anyio.CapacityLimiter(CONCURRENCY)

        async def fetch(summary: Mapping[str, Any]) -> None:
            cid = str(summary["Id"])
            async with limiter:
                try:
                    inspect = await self._get(f"/containers/{cid}/json")
                except EngineError as exc:  # removed since it was listed: skip it
                    self.log.debug("skipping container %s: %s", cid[:12], exc)
                    return
                stats = None
                if summary.get("State") == "running":
                    try:
                        stats = await self._get(f"/containers/{cid}/stats", {"stream": "false"})
                    except EngineError as exc:  # still report its state, health, restarts
                        self.log.debug("no stats of container %s: %s", cid[:12], exc)
            details[cid] = (inspect, stats)

        async with anyio.create_task_group() as tg:
            for summary in containers:
                tg.start_soon(fetch, summary)

        metrics = [Metric("docker.up", 1, device_class="connectivity")]
        counts = dict.fromkeys(STATES, 0)
        for summary in containers:
            cid = str(summary["Id"])
            if cid not in details:
                continue
            state = str(summary.get("State", "unknown"))
            counts[state] = counts.get(state, 0) + 1
            metrics += self._container(summary, *details[cid])
        for state, count in counts.items():
            metrics.append(Metric("docker.containers", count, "containers", {"state": state}))
        self._summary = f"{counts['running']} of {sum(counts.values())} container(s) running"
        return metrics

    def _container(
        self, summary: Mapping[str, Any], inspect: Mapping[str, Any], stats: Any
    ) -> Iterator[Metric]:
        cid = str(summary["Id"])
        labels = {
            "container": _container_name(summary),
            "image": str(summary.get("Image", "")),
            "id": cid[:12],
        }
        state = inspect.get("State") or {}
        status = str(state.get("Status") or summary.get("State") or "unknown")
        running = status == "running"
        prefix = "docker.container."
        yield Metric(prefix + "running", 1 if running else 0, labels={**labels, "state": status})
        health = (state.get("Health") or {}).get("Status")
        if health and health != "none":
            yield Metric(
                prefix + "healthy", 1 if running and health == "healthy" else 0, "", labels
            )
        yield Metric(
            prefix + "restarts",
            int(inspect.get("RestartCount") or 0),
            "restarts",
            labels,
            kind="counter",
        )
        if not isinstance(stats, Mapping):
            return
        cpu = cpu_percent(stats)
        if cpu is not None:
            yield Metric(
                prefix + "cpu_percent", round(cpu, 2), "%", labels, device_class="percentage"
            )
        memory = memory_usage(stats)
        if memory is not None:
            used, limit = memory
            yield Metric(prefix + "memory_usage", used, "bytes", labels, device_class="data_size")
            yield Metric(prefix + "memory_limit", limit, "bytes", labels, device_class="data_size")
            if limit > 0:
                yield Metric(
                    prefix + "memory_percent",
                    round(100.0 * used / limit, 2),
                    "%",
                    labels,
                    device_class="percentage",
                )
        network = _network(stats)
        if network is not None:
            for name, value in zip(("network_rx_bytes", "network_tx_bytes"), network, strict=True):
                yield Metric(
                    prefix + name, value, "bytes", labels, kind="counter", device_class="data_size"
                )

    async def health(self) -> HealthReport | None:
        """Failing with the reason while the engine cannot be reached."""
        if self._problem is not None:
            where = self.config.url
            return HealthReport(HealthState.FAILING, f"Docker engine at {where}: {self._problem}")
        return HealthReport(HealthState.OK, self._summary)

    async def teardown(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``docker`` plugin type."""
    register(Docker)
