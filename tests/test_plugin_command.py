"""The bundled ``command`` plugin, running real commands."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from homelab_core import ExecutionStatus, HealthReport, Metric, PluginManager
from homelab_core.options import REDACTED, build_config, config_to_dict
from homelab_core.plugin import validate_plugin_type
from homelab_core.runner import run_once
from homelab_plugins import command
from homelab_plugins.command import Command, CommandConfig, parse_influx

pytestmark = pytest.mark.anyio


async def run(cmd: str | list[str], *, timeout: float = 5.0, **options: Any) -> Any:
    """Collect once; returns the metrics by name (one each) and the health report."""
    plugin = Command(
        CommandConfig(command=cmd, command_timeout=timeout, **options), instance_id="cmd"
    )
    execution, metrics, report = await run_once(plugin, instance_id="cmd", timeout=30)
    assert execution.status is ExecutionStatus.OK, execution.error
    return metrics, report


def by_name(metrics: list[Metric]) -> dict[str, Metric]:
    named = {m.name: m for m in metrics}
    assert len(named) == len(metrics), "expected one series per name"
    return named


def values(metrics: list[Metric]) -> dict[str, float]:
    return {name: m.value for name, m in by_name(metrics).items()}


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists, or is only a zombie that init has yet to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def read_pids(path: Path) -> list[int]:
    """The pids a test command wrote (it writes them before it starts waiting)."""
    return [int(p) for p in path.read_text().split()]


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    """Whether ``pid`` is gone within ``timeout`` (an orphan is reaped by init, not by us)."""
    deadline = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_plugin_type_registers_through_its_hook() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(command, name="command")
    assert manager.get_type("command") is Command
    assert validate_plugin_type(Command) == []


def test_a_string_from_set_stays_one_shell_command() -> None:
    config = build_config(
        CommandConfig, {"command": "echo a,b", "command_timeout": "2"}, from_text=True
    )
    assert config.command == "echo a,b"
    assert config.command_timeout == 2.0


def test_a_json_list_from_set_is_a_list_of_arguments() -> None:
    config = build_config(CommandConfig, {"command": '["sh", "-c", "exit 2"]'}, from_text=True)
    assert config.command == ["sh", "-c", "exit 2"]


async def test_a_successful_command_reports_ok_exit_code_and_duration() -> None:
    metrics, report = await run("true")
    assert values(metrics) == {
        "command.ok": 1,
        "command.exit_code": 0,
        "command.timed_out": 0,
        "command.duration": pytest.approx(by_name(metrics)["command.duration"].value),
    }
    assert 0 <= by_name(metrics)["command.duration"].value < 5
    assert by_name(metrics)["command.duration"].unit == "s"
    assert report is None


async def test_a_json_object_maps_names_to_values() -> None:
    metrics, report = await run(
        """echo '{"answer": 42, "ratio": 0.5, "up": true, "disk": {"used": 3}, "note": "x"}'"""
    )
    got = values(metrics)
    assert {k: got[k] for k in ("answer", "ratio", "up", "disk.used")} == {
        "answer": 42,
        "ratio": 0.5,
        "up": 1,
        "disk.used": 3,
    }
    assert "note" not in got
    assert report is None


async def test_a_json_list_keeps_units_labels_and_kinds() -> None:
    out = (
        '[{"name": "temp", "value": 21.5, "unit": "°C", "labels": {"room": "attic"}},'
        ' {"name": "temp", "value": 19, "labels": {"room": "cellar"}},'
        ' {"name": "jobs.done", "value": 7, "kind": "counter"}]'
    )
    metrics, report = await run(["printf", "%s", out], format="json")
    temps = sorted((m for m in metrics if m.name == "temp"), key=lambda m: m.value)
    assert [(m.value, m.unit, m.labels) for m in temps] == [
        (19, "", {"room": "cellar"}),
        (21.5, "°C", {"room": "attic"}),
    ]
    (done,) = [m for m in metrics if m.name == "jobs.done"]
    assert done.kind == "counter"
    assert report is None


async def test_invalid_json_items_are_skipped_and_named_in_a_degraded_health() -> None:
    out = '[{"name": "good", "value": 1}, {"name": "bad", "value": "high"}]'
    metrics, report = await run(["printf", "%s", out])
    assert values(metrics)["good"] == 1
    assert "bad" not in values(metrics)
    assert report is not None
    assert report.state == "degraded"
    assert "item 1 (bad)" in report.message


async def test_line_protocol_fields_become_measurement_dot_field_with_tags_as_labels() -> None:
    line = "weather,city=Oslo,station=7 temp=1.5,humidity=80i,raining=true 1700000000000000000"
    metrics, report = await run(["echo", line])
    weather = {m.name: m for m in metrics if m.name.startswith("weather.")}
    assert {n: m.value for n, m in weather.items()} == {
        "weather.temp": 1.5,
        "weather.humidity": 80,
        "weather.raining": 1,
    }
    assert all(m.labels == {"city": "Oslo", "station": "7"} for m in weather.values())
    assert all(m.timestamp == 1_700_000_000.0 for m in weather.values())
    assert report is None


async def test_line_protocol_without_timestamp_gets_the_collection_time() -> None:
    before = time.time()
    metrics, _ = await run(["echo", "load value=2u"])
    (load,) = [m for m in metrics if m.name == "load.value"]
    assert load.value == 2
    assert load.timestamp is not None
    assert load.timestamp >= before


async def test_line_protocol_escapes_are_undone_and_names_made_valid() -> None:
    line = r"disk\ io,dev=sd\,a,path=/mnt/my\ disk,k\=v=x\=y read\ ops=5i 1700000000000000000"
    metrics, _ = await run(["echo", line])
    (metric,) = [m for m in metrics if not m.name.startswith("command.")]
    assert metric.name == "disk_io.read_ops"
    assert metric.labels == {"dev": "sd,a", "path": "/mnt/my disk", "k=v": "x=y"}
    assert metric.value == 5


async def test_line_protocol_string_fields_are_skipped_even_with_spaces_and_commas() -> None:
    line = 'svc,name=web status="up, fine",code=200i,msg="a \\"b\\" c" 1700000000000000000'
    metrics, report = await run(["echo", line])
    assert [m.name for m in metrics if not m.name.startswith("command.")] == ["svc.code"]
    assert report is None


async def test_line_protocol_precision_scales_timestamps() -> None:
    metrics, _ = await run(["echo", "m v=1 1700000000000"], precision="ms")
    (metric,) = [m for m in metrics if m.name == "m.v"]
    assert metric.timestamp == 1_700_000_000.0


def test_line_protocol_comments_and_blank_lines_are_ignored_and_bad_lines_named() -> None:
    parsed = parse_influx("# a comment\n\nok v=1\nbroken\n")
    assert [m.name for m in parsed.metrics] == ["ok.v"]
    assert parsed.problems == ["line 4: expected 'measurement[,tags] fields [timestamp]'"]


async def test_a_non_zero_exit_is_a_successful_collection_with_failing_health() -> None:
    metrics, report = await run("echo 'disk is full' >&2; exit 3")
    assert values(metrics) == {
        "command.ok": 0,
        "command.exit_code": 3,
        "command.timed_out": 0,
        "command.duration": pytest.approx(by_name(metrics)["command.duration"].value),
    }
    assert report == HealthReport("failing", "exited with status 3: disk is full")


async def test_the_health_message_keeps_only_the_tail_of_stderr() -> None:
    _, report = await run("seq 1 5000 >&2; echo the-end >&2; exit 1")
    assert report is not None
    assert report.message.endswith("the-end")
    assert len(report.message) < 400


async def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; wait"
    started = time.monotonic()
    metrics, report = await run(["sh", "-c", script], timeout=0.5)
    assert time.monotonic() - started < 3
    got = values(metrics)
    assert (got["command.ok"], got["command.timed_out"]) == (0, 1)
    assert got["command.exit_code"] < 0  # killed by a signal
    assert report is not None
    assert report.state == "failing"
    assert "timed out after 0.5 s" in report.message
    shell, child = read_pids(pids)
    assert process_gone(shell)
    assert wait_gone(child)


async def test_a_run_cancelled_by_the_scheduler_still_kills_the_command(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    plugin = Command(
        CommandConfig(command=f"echo $$ > {pids}; exec sleep 30", command_timeout=60),
        instance_id="cmd",
    )
    started = time.monotonic()
    execution, metrics, _ = await run_once(plugin, instance_id="cmd", timeout=0.5)
    assert execution.status is ExecutionStatus.TIMEOUT
    assert time.monotonic() - started < 3
    assert metrics == []
    (pid,) = read_pids(pids)
    assert process_gone(pid)


async def test_unparseable_output_is_degraded_not_an_error() -> None:
    metrics, report = await run("echo '{not json'")
    assert values(metrics)["command.ok"] == 1
    assert report is not None
    assert report.state == "degraded"
    assert report.message.startswith("output is not valid JSON")


async def test_output_that_is_no_line_protocol_is_degraded() -> None:
    _, report = await run("echo hello world")
    assert report is not None
    assert report.state == "degraded"
    assert "not line protocol" in report.message


async def test_empty_output_reports_only_the_status() -> None:
    metrics, report = await run("true", format="json")
    assert {m.name for m in metrics} == {
        "command.ok",
        "command.exit_code",
        "command.timed_out",
        "command.duration",
    }
    assert report is None


async def test_a_list_runs_without_a_shell() -> None:
    metrics, _ = await run(["printf", "%s", "$HOME v=1"])
    assert {m.name for m in metrics} >= {"_HOME.v"}


async def test_shell_true_runs_a_list_through_the_shell() -> None:
    metrics, report = await run(["printf", "'{\"n\": %s}'", "$((6 * 7))"], shell=True)
    assert values(metrics)["n"] == 42
    assert report is None


async def test_shell_false_splits_a_string_into_arguments() -> None:
    metrics, _ = await run("printf '%s' '$HOME v=1'", shell=False)
    assert "_HOME.v" in values(metrics)


async def test_env_and_cwd_are_given_to_the_command(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("40")
    metrics, _ = await run(
        'echo "{\\"sum\\": $(( $(cat base.txt) + EXTRA ))}"', cwd=str(tmp_path), env={"EXTRA": "2"}
    )
    assert values(metrics)["sum"] == 42


def test_env_values_are_secret() -> None:
    config = build_config(CommandConfig, {"command": "true", "env": {"API_KEY": "k3y-value"}})
    assert config_to_dict(config)["env"] == {"API_KEY": REDACTED}
    assert Command.config_schema()["properties"]["env"]["writeOnly"] is True


async def test_a_missing_executable_is_reported_not_raised() -> None:
    metrics, report = await run(["/nonexistent/homelab-check"])
    assert values(metrics)["command.exit_code"] == 127
    assert report is not None
    assert report.state == "failing"
    assert report.message.startswith("cannot start:")
