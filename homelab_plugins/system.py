"""The bundled ``system`` plugin: CPU, load, memory, disks, network, uptime, temperatures.

Everything comes from psutil, so it works wherever psutil does; parts a platform lacks
(load average, sensors) are left out rather than failing the whole collection. psutil is
imported by the methods that read it, so listing plugin types does not load it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatchcase
from typing import Any

import attrs

from homelab_core import Metric, Plugin, hookimpl, option

#: Shortest CPU-time window worth reporting; shorter ones are mostly rounding noise.
MIN_CPU_WINDOW = 0.1
#: Filesystem types that psutil lists as real but whose usage means nothing (snap images).
SKIPPED_FSTYPES = frozenset({"squashfs", "iso9660", "udf"})


@attrs.define
class SystemConfig:
    """Options of a ``system`` instance."""

    per_cpu: bool = option(
        False,
        description="Also report each core's CPU percent (label 'cpu'); off by default"
        " because many-core hosts would add dozens of series.",
    )
    disks: bool = option(True, description="Report usage of each mounted filesystem.")
    network: bool = option(True, description="Report traffic counters and rates per interface.")
    temperatures: bool = option(
        True, description="Report hardware sensor temperatures where the platform exposes them."
    )
    exclude_mounts: list[str] = option(
        factory=lambda: ["/proc", "/sys", "/dev", "/run"],
        description="Mount points to skip, with everything below them.",
    )
    exclude_interfaces: list[str] = option(
        factory=lambda: ["lo"],
        description="Network interfaces to skip; shell patterns such as 'veth*' work.",
    )


def _busy_percent(before: Any, after: Any) -> float:
    """Busy share of the CPU time between two ``cpu_times()`` readings.

    Computed here rather than by ``psutil.cpu_percent`` because psutil keeps its previous
    reading per thread, and the scheduler runs setup and collect in any worker thread.
    """
    delta: dict[str, float] = {
        f: max(0.0, getattr(after, f) - getattr(before, f)) for f in after._fields
    }
    # Linux counts guest time inside user/nice already; iowait is idle time for our purpose.
    total = sum(delta.values()) - delta.get("guest", 0.0) - delta.get("guest_nice", 0.0)
    idle = delta.get("idle", 0.0) + delta.get("iowait", 0.0)
    if total <= 0:
        return 0.0
    return round(min(100.0, max(0.0, 100.0 * (total - idle) / total)), 1)


def _rate(before: float, after: float, elapsed: float) -> float | None:
    """Per-second rate, or None when it cannot be trusted (reset counter, no time passed)."""
    if elapsed <= 0 or after < before:
        return None
    # A tenth of a unit a second is more than any reader needs, and keeps the stored series
    # small (a full float costs several times as much as a decimal in the store's chunks).
    return round((after - before) / elapsed, 1)


def _excluded_mount(mount: str, prefixes: Sequence[str]) -> bool:
    """Whether ``mount`` is one of ``prefixes`` or below one (``/run`` but not ``/runner``)."""
    bases = [p.rstrip("/") for p in prefixes]
    return any(mount == b or mount.startswith(b + "/") for b in bases)


class System(Plugin[SystemConfig]):
    """Host metrics from psutil."""

    name = "system"
    title = "System"
    category = "system"
    description = "CPU, load, memory, swap, disk, network, uptime and temperatures of this host."
    version = "1.0.0"
    default_interval = 10.0

    _cpu_at: float
    _cpu_total: Any
    _cpu_each: list[Any]
    _net_at: float
    _net: dict[str, Any]

    def setup(self) -> None:
        """Take the CPU and network baselines, so the first collect has real deltas."""
        import psutil

        self._cpu_at = time.monotonic()
        self._cpu_total = psutil.cpu_times()
        self._cpu_each = psutil.cpu_times(percpu=True)
        self._net_at = time.monotonic()
        self._net = self._read_net()

    def collect(self) -> list[Metric]:
        """Take one reading of everything enabled."""
        import psutil

        metrics = [*self._cpu(), *self._memory()]
        if self.config.disks:
            metrics += self._disks()
        if self.config.network:
            metrics += self._network()
        uptime = float(max(0, round(time.time() - psutil.boot_time())))
        metrics.append(Metric("uptime", uptime, "s", device_class="duration"))
        if self.config.temperatures:
            metrics += self._temperatures()
        return metrics

    def _cpu(self) -> Iterator[Metric]:
        import psutil

        # Right after setup (``homelab run --once``) wait out a short window instead of
        # reporting the near-zero noise of a few microseconds.
        waited = time.monotonic() - self._cpu_at
        if waited < MIN_CPU_WINDOW:
            time.sleep(MIN_CPU_WINDOW - waited)
        total, each = psutil.cpu_times(), psutil.cpu_times(percpu=True)
        self._cpu_at = time.monotonic()
        yield Metric(
            "cpu.percent", _busy_percent(self._cpu_total, total), "%", device_class="percentage"
        )
        if self.config.per_cpu:
            for index, (before, after) in enumerate(zip(self._cpu_each, each, strict=False)):
                percent = _busy_percent(before, after)
                yield Metric(
                    "cpu.percent",
                    percent,
                    "%",
                    labels={"cpu": str(index)},
                    device_class="percentage",
                )
        self._cpu_total, self._cpu_each = total, each
        if hasattr(psutil, "getloadavg"):
            for minutes, load in zip((1, 5, 15), psutil.getloadavg(), strict=True):
                yield Metric(f"load.{minutes}m", load, "tasks")

    def _memory(self) -> Iterator[Metric]:
        import psutil

        mem, swap = psutil.virtual_memory(), psutil.swap_memory()
        for field in ("total", "used", "available"):
            yield Metric(f"mem.{field}", getattr(mem, field), "bytes", device_class="data_size")
        yield Metric("mem.percent", mem.percent, "%", device_class="percentage")
        for field in ("total", "used"):
            yield Metric(f"swap.{field}", getattr(swap, field), "bytes", device_class="data_size")
        yield Metric("swap.percent", swap.percent, "%", device_class="percentage")

    def _disks(self) -> Iterator[Metric]:
        import psutil

        # all=False already drops pseudo filesystems (proc, sysfs, cgroup, ...) on Linux.
        for part in psutil.disk_partitions(all=False):
            if part.fstype in SKIPPED_FSTYPES or _excluded_mount(
                part.mountpoint, self.config.exclude_mounts
            ):
                continue
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except OSError as exc:  # PermissionError included: one bad mount must not fail all
                self.log.debug("skipping mount %s: %s", part.mountpoint, exc)
                continue
            if usage.total <= 0:
                continue
            labels = {"mount": part.mountpoint, "device": part.device, "fstype": part.fstype}
            for field in ("total", "used", "free"):
                yield Metric(
                    f"disk.{field}",
                    getattr(usage, field),
                    "bytes",
                    labels,
                    device_class="data_size",
                )
            yield Metric("disk.percent", usage.percent, "%", labels, device_class="percentage")

    def _read_net(self) -> dict[str, Any]:
        import psutil

        counters: dict[str, Any] = psutil.net_io_counters(pernic=True)
        patterns = self.config.exclude_interfaces
        return {
            nic: c for nic, c in counters.items() if not any(fnmatchcase(nic, p) for p in patterns)
        }

    def _network(self) -> Iterator[Metric]:
        now, current = time.monotonic(), self._read_net()
        elapsed, previous = now - self._net_at, self._net
        self._net_at, self._net = now, current
        for nic, c in current.items():
            labels = {"interface": nic}
            for field, unit, device_class in (
                ("bytes_sent", "bytes", "data_size"),
                ("bytes_recv", "bytes", "data_size"),
                ("packets_sent", "packets", None),
                ("packets_recv", "packets", None),
            ):
                value = getattr(c, field)
                yield Metric(
                    f"net.{field}", value, unit, labels, kind="counter", device_class=device_class
                )
            if nic not in previous:
                continue  # appeared since the last reading: no baseline yet
            for name, field in (("net.rx_rate", "bytes_recv"), ("net.tx_rate", "bytes_sent")):
                rate = _rate(getattr(previous[nic], field), getattr(c, field), elapsed)
                if rate is not None:
                    yield Metric(name, rate, "bytes/s", labels, device_class="data_rate")

    def _temperatures(self) -> Iterator[Metric]:
        import psutil

        read = getattr(psutil, "sensors_temperatures", None)  # absent on Windows and macOS
        if read is None:
            return
        for sensor, entries in (read() or {}).items():
            for index, entry in enumerate(entries):
                if entry.current is None or not math.isfinite(entry.current):
                    continue
                # Unlabelled entries are common; the index keeps their series apart.
                labels = {"sensor": sensor, "label": entry.label or str(index)}
                yield Metric(
                    "sensor.temperature", entry.current, "°C", labels, device_class="temperature"
                )


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``system`` plugin type."""
    register(System)
