"""The bundled ``system`` plugin, run against the real machine (plus a few faked readings)."""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from importlib.metadata import entry_points

import psutil
import pytest

from homelab_core import Plugin
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import plugin_harness, run_plugin
from homelab_plugins import system
from homelab_plugins.system import System, SystemConfig

NetCounters = namedtuple("NetCounters", "bytes_sent bytes_recv packets_sent packets_recv")
Temperature = namedtuple("Temperature", "label current high critical")
Partition = namedtuple("Partition", "device mountpoint fstype opts")


def test_every_percentage_is_between_0_and_100() -> None:
    run = run_plugin(System, per_cpu=True).assert_ok()
    percents = [m for m in run.metrics if m.unit == "%"]
    assert {"cpu.percent", "mem.percent", "swap.percent", "disk.percent"} <= {
        m.name for m in percents
    }
    assert all(0 <= m.value <= 100 for m in percents)


def test_total_cpu_percent_has_no_cpu_label_by_default() -> None:
    (metric,) = run_plugin(System).assert_ok().find("cpu.percent")
    assert metric.labels == {}


def test_per_cpu_adds_one_series_per_core() -> None:
    run = run_plugin(System, per_cpu=True).assert_ok()
    cores = [m.labels["cpu"] for m in run.find("cpu.percent")[1:]]
    assert cores == [str(i) for i in range(len(psutil.cpu_times(percpu=True)))]


def test_cpu_percent_sees_a_busy_core_right_after_setup() -> None:
    stop = time.monotonic() + 1.0

    def spin() -> None:
        while time.monotonic() < stop:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        percent = run_plugin(System).assert_ok().value("cpu.percent")
    finally:
        spinner.join()
    assert percent > 0


def test_cpu_baseline_survives_setup_and_collect_in_different_threads() -> None:
    plugin = System(SystemConfig(), instance_id="system")
    done, release = threading.Event(), threading.Event()

    def setup_then_stay_alive() -> None:  # like a pool worker: its thread id stays taken
        plugin.setup()
        done.set()
        release.wait()

    worker = threading.Thread(target=setup_then_stay_alive)
    worker.start()
    try:
        done.wait()
        stop = time.monotonic() + 0.3
        while time.monotonic() < stop:
            pass
        (metric,) = [m for m in plugin.collect() if m.name == "cpu.percent"]
        percent = metric.value
    finally:
        release.set()
        worker.join()
    assert percent > 0


def test_load_average_reports_1_5_and_15_minutes() -> None:
    run = run_plugin(System).assert_ok()
    assert all(run.value(f"load.{m}m") >= 0 for m in (1, 5, 15))


def test_memory_used_does_not_exceed_total() -> None:
    run = run_plugin(System).assert_ok()
    assert run.value("mem.total") > 0
    assert 0 <= run.value("mem.used") <= run.value("mem.total")
    assert 0 <= run.value("mem.available") <= run.value("mem.total")


def test_swap_used_does_not_exceed_total() -> None:
    run = run_plugin(System).assert_ok()
    assert 0 <= run.value("swap.used") <= run.value("swap.total")


def test_at_least_one_disk_mount_has_a_size() -> None:
    disks = run_plugin(System).assert_ok().find("disk.total")
    assert any(m.value > 0 for m in disks)
    assert all(set(m.labels) == {"mount", "device", "fstype"} for m in disks)


def test_disk_used_and_free_fit_in_total() -> None:
    run = run_plugin(System).assert_ok()
    for total in run.find("disk.total"):
        # find(), not metric(): a mount listed twice gives two series with the same labels
        used = run.find("disk.used", **total.labels)[0]
        free = run.find("disk.free", **total.labels)[0]
        assert used.value + free.value <= total.value


def test_disks_false_removes_disk_metrics() -> None:
    run = run_plugin(System, disks=False).assert_ok()
    assert not [m for m in run.metrics if m.name.startswith("disk.")]


def test_excluded_mount_prefix_removes_that_mount() -> None:
    mount = run_plugin(System).assert_ok().find("disk.total")[0].labels["mount"]
    run = run_plugin(System, exclude_mounts=[mount]).assert_ok()
    assert mount not in {m.labels.get("mount") for m in run.metrics}


def test_exclude_mounts_matches_whole_path_components() -> None:
    assert system._excluded_mount("/run/user/1000", ["/run"])
    assert system._excluded_mount("/run", ["/run/"])
    assert not system._excluded_mount("/runner", ["/run"])


@pytest.mark.in_process("monkeypatches psutil")
def test_unreadable_mount_is_skipped_without_failing_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_usage = psutil.disk_usage
    parts = [Partition("/dev/a", "/", "ext4", "rw"), Partition("/dev/b", "/secret", "ext4", "rw")]

    def usage(path: str) -> object:
        if path == "/secret":
            raise PermissionError(13, "Permission denied", path)
        return real_usage("/")

    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: parts)
    monkeypatch.setattr(psutil, "disk_usage", usage)
    mounts = {m.labels["mount"] for m in run_plugin(System).assert_ok().find("disk.total")}
    assert mounts == {"/"}


def test_network_counters_are_counters_with_an_interface_label() -> None:
    run = run_plugin(System, exclude_interfaces=[]).assert_ok()
    counters = [m for m in run.metrics if m.name in {"net.bytes_sent", "net.packets_recv"}]
    assert counters
    assert all(m.kind == "counter" and "interface" in m.labels for m in counters)


def test_first_collect_already_has_network_rates() -> None:
    run = run_plugin(System, exclude_interfaces=[]).assert_ok()
    assert run.has("net.rx_rate")
    assert run.has("net.tx_rate")


def test_network_rates_are_not_negative_after_a_second_collect() -> None:
    with plugin_harness(System, exclude_interfaces=[]) as harness:
        harness.run().assert_ok()
        run = harness.run().assert_ok()
    rates = run.find("net.rx_rate") + run.find("net.tx_rate")
    assert rates
    assert all(m.value >= 0 and m.unit == "bytes/s" for m in rates)


@pytest.mark.in_process("monkeypatches psutil")
def test_reset_network_counter_gives_no_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([{"eth9": NetCounters(500, 500, 5, 5)}, {"eth9": NetCounters(10, 10, 1, 1)}])
    monkeypatch.setattr(psutil, "net_io_counters", lambda pernic=True: next(readings))
    run = run_plugin(System).assert_ok()
    assert run.has("net.bytes_recv")
    assert not run.has("net.rx_rate")


def test_rate_is_none_when_no_time_has_passed() -> None:
    assert system._rate(100, 200, 0.0) is None
    assert system._rate(100, 300, 2.0) == 100.0


def test_excluded_interface_is_not_reported() -> None:
    nic = next(iter(psutil.net_io_counters(pernic=True)))
    run = run_plugin(System, exclude_interfaces=[nic]).assert_ok()
    assert nic not in {m.labels.get("interface") for m in run.metrics}


def test_exclude_interfaces_accepts_shell_patterns() -> None:
    run = run_plugin(System, exclude_interfaces=["*"]).assert_ok()
    assert not [m for m in run.metrics if m.name.startswith("net.")]


def test_network_false_removes_network_metrics() -> None:
    run = run_plugin(System, network=False).assert_ok()
    assert not [m for m in run.metrics if m.name.startswith("net.")]


def test_uptime_is_positive_seconds() -> None:
    (uptime,) = run_plugin(System).assert_ok().find("uptime")
    assert uptime.value > 0
    assert uptime.unit == "s"


@pytest.mark.in_process("monkeypatches psutil")
def test_temperatures_are_labelled_by_sensor_and_label(monkeypatch: pytest.MonkeyPatch) -> None:
    sensors = {"coretemp": [Temperature("Core 0", 41.0, 80.0, 100.0), Temperature("", 40.0, 0, 0)]}
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: sensors, raising=False)
    temps = run_plugin(System).assert_ok().find("sensor.temperature")
    assert [(m.labels, m.value, m.unit) for m in temps] == [
        ({"sensor": "coretemp", "label": "Core 0"}, 41.0, "°C"),
        ({"sensor": "coretemp", "label": "1"}, 40.0, "°C"),
    ]


@pytest.mark.in_process("monkeypatches psutil")
def test_temperatures_are_skipped_where_psutil_has_no_sensors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    assert not run_plugin(System).assert_ok().has("sensor.temperature")


@pytest.mark.in_process("monkeypatches psutil")
def test_temperatures_false_removes_temperature_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    sensors = {"acpitz": [Temperature("", 30.0, None, None)]}
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: sensors, raising=False)
    assert not run_plugin(System, temperatures=False).assert_ok().has("sensor.temperature")


def test_every_metric_has_a_unit() -> None:
    metrics = run_plugin(System, per_cpu=True, exclude_interfaces=[]).assert_ok().metrics
    assert all(m.unit for m in metrics), [m.name for m in metrics if not m.unit]


def test_every_option_is_described() -> None:
    properties = System.config_schema()["properties"]
    assert set(properties) == {
        "per_cpu",
        "disks",
        "network",
        "temperatures",
        "exclude_mounts",
        "exclude_interfaces",
    }
    assert all(p.get("description") and "default" in p for p in properties.values())


def test_entry_point_registers_the_system_plugin() -> None:
    (ep,) = [ep for ep in entry_points(group="homelab.plugins") if ep.name == "system"]
    registered: list[type[Plugin]] = []
    ep.load().register_plugins(register=registered.append)
    (plugin_type,) = registered
    assert issubclass(plugin_type, Plugin)
    assert plugin_type.name == "system"
    assert validate_plugin_type(plugin_type) == []
