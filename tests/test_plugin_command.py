"""The bundled ``command`` plugin, running real commands."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from homelab_core import ExecutionStatus, HealthReport, PluginManager
from homelab_core.options import REDACTED, build_config, config_to_dict
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import run_plugin_async
from homelab_plugins import command
from homelab_plugins.command import Command, CommandConfig, parse_influx

pytestmark = pytest.mark.anyio


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
    run = (await run_plugin_async(Command, instance_id="cmd", command="true")).assert_ok()
    assert sorted(m.name for m in run.metrics) == sorted(
        ["command.ok", "command.exit_code", "command.timed_out", "command.duration"]
    )
    assert (run.value("command.ok"), run.value("command.exit_code")) == (1, 0)
    assert run.value("command.timed_out") == 0
    assert 0 <= run.value("command.duration") < 5
    assert run.metric("command.duration").unit == "s"
    assert run.health is None


async def test_a_json_object_maps_names_to_values() -> None:
    run = (
        await run_plugin_async(
            Command,
            instance_id="cmd",
            command="""echo '{"answer": 42, "ratio": 0.5, "up": true, "disk": {"used": 3},"""
            """ "note": "x"}'""",
        )
    ).assert_ok()
    assert {k: run.value(k) for k in ("answer", "ratio", "up", "disk.used")} == {
        "answer": 42,
        "ratio": 0.5,
        "up": 1,
        "disk.used": 3,
    }
    assert not run.has("note")
    assert run.health is None


async def test_a_json_list_keeps_units_labels_and_kinds() -> None:
    out = (
        '[{"name": "temp", "value": 21.5, "unit": "°C", "labels": {"room": "attic"}},'
        ' {"name": "temp", "value": 19, "labels": {"room": "cellar"}},'
        ' {"name": "jobs.done", "value": 7, "kind": "counter"}]'
    )
    run = (
        await run_plugin_async(
            Command, instance_id="cmd", command=["printf", "%s", out], format="json"
        )
    ).assert_ok()
    temps = sorted(run.find("temp"), key=lambda m: m.value)
    assert [(m.value, m.unit, m.labels) for m in temps] == [
        (19, "", {"room": "cellar"}),
        (21.5, "°C", {"room": "attic"}),
    ]
    assert run.metric("jobs.done").kind == "counter"
    assert run.health is None


async def test_invalid_json_items_are_skipped_and_named_in_a_degraded_health() -> None:
    out = '[{"name": "good", "value": 1}, {"name": "bad", "value": "high"}]'
    run = (
        await run_plugin_async(Command, instance_id="cmd", command=["printf", "%s", out])
    ).assert_ok()
    assert run.value("good") == 1
    assert not run.has("bad")
    assert run.health is not None
    assert run.health.state == "degraded"
    assert "item 1 (bad)" in run.health.message


async def test_line_protocol_fields_become_measurement_dot_field_with_tags_as_labels() -> None:
    line = "weather,city=Oslo,station=7 temp=1.5,humidity=80i,raining=true 1700000000000000000"
    run = (await run_plugin_async(Command, instance_id="cmd", command=["echo", line])).assert_ok()
    weather = {m.name: m for m in run.metrics if m.name.startswith("weather.")}
    assert {n: m.value for n, m in weather.items()} == {
        "weather.temp": 1.5,
        "weather.humidity": 80,
        "weather.raining": 1,
    }
    assert all(m.labels == {"city": "Oslo", "station": "7"} for m in weather.values())
    assert all(m.timestamp == 1_700_000_000.0 for m in weather.values())
    assert run.health is None


async def test_line_protocol_without_timestamp_gets_the_collection_time() -> None:
    before = time.time()
    run = (
        await run_plugin_async(Command, instance_id="cmd", command=["echo", "load value=2u"])
    ).assert_ok()
    load = run.metric("load.value")
    assert load.value == 2
    assert load.timestamp is not None
    assert load.timestamp >= before


async def test_line_protocol_escapes_are_undone_and_names_made_valid() -> None:
    line = r"disk\ io,dev=sd\,a,path=/mnt/my\ disk,k\=v=x\=y read\ ops=5i 1700000000000000000"
    run = (await run_plugin_async(Command, instance_id="cmd", command=["echo", line])).assert_ok()
    (metric,) = [m for m in run.metrics if not m.name.startswith("command.")]
    assert metric.name == "disk_io.read_ops"
    assert metric.labels == {"dev": "sd,a", "path": "/mnt/my disk", "k=v": "x=y"}
    assert metric.value == 5


async def test_line_protocol_string_fields_are_skipped_even_with_spaces_and_commas() -> None:
    line = 'svc,name=web status="up, fine",code=200i,msg="a \\"b\\" c" 1700000000000000000'
    run = (await run_plugin_async(Command, instance_id="cmd", command=["echo", line])).assert_ok()
    assert [m.name for m in run.metrics if not m.name.startswith("command.")] == ["svc.code"]
    assert run.health is None


async def test_line_protocol_precision_scales_timestamps() -> None:
    run = (
        await run_plugin_async(
            Command, instance_id="cmd", command=["echo", "m v=1 1700000000000"], precision="ms"
        )
    ).assert_ok()
    assert run.metric("m.v").timestamp == 1_700_000_000.0


def test_line_protocol_comments_and_blank_lines_are_ignored_and_bad_lines_named() -> None:
    parsed = parse_influx("# a comment\n\nok v=1\nbroken\n")
    assert [m.name for m in parsed.metrics] == ["ok.v"]
    assert parsed.problems == ["line 4: expected 'measurement[,tags] fields [timestamp]'"]


async def test_a_non_zero_exit_is_a_successful_collection_with_failing_health() -> None:
    run = (
        await run_plugin_async(
            Command, instance_id="cmd", command="echo 'disk is full' >&2; exit 3"
        )
    ).assert_ok()
    assert sorted(m.name for m in run.metrics) == sorted(
        ["command.ok", "command.exit_code", "command.timed_out", "command.duration"]
    )
    assert (run.value("command.ok"), run.value("command.exit_code")) == (0, 3)
    assert run.value("command.timed_out") == 0
    assert run.health == HealthReport("failing", "exited with status 3: disk is full")


async def test_the_health_message_keeps_only_the_tail_of_stderr() -> None:
    run = (
        await run_plugin_async(
            Command, instance_id="cmd", command="seq 1 5000 >&2; echo the-end >&2; exit 1"
        )
    ).assert_ok()
    assert run.health is not None
    assert run.health.message.endswith("the-end")
    assert len(run.health.message) < 400


async def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; wait"
    started = time.monotonic()
    run = (
        await run_plugin_async(
            Command, instance_id="cmd", command=["sh", "-c", script], command_timeout=0.5
        )
    ).assert_ok()
    assert time.monotonic() - started < 3
    assert (run.value("command.ok"), run.value("command.timed_out")) == (0, 1)
    assert run.value("command.exit_code") < 0  # killed by a signal
    assert run.health is not None
    assert run.health.state == "failing"
    assert "timed out after 0.5 s" in run.health.message
    shell, child = read_pids(pids)
    assert process_gone(shell)
    assert wait_gone(child)


async def test_a_run_cancelled_by_the_scheduler_still_kills_the_command(tmp_path: Path) -> None:
    # In a worker process too: the SIGTERM that ends the worker cancels the run first, and
    # the plugin kills the command's process group on the way out.
    pids = tmp_path / "pids"
    started = time.monotonic()
    run = await run_plugin_async(
        Command,
        instance_id="cmd",
        timeout=0.5,
        command=f"echo $$ > {pids}; exec sleep 30",
        command_timeout=60,
    )
    assert run.status is ExecutionStatus.TIMEOUT
    assert time.monotonic() - started < 3
    assert run.metrics == []
    (pid,) = read_pids(pids)
    assert process_gone(pid)


async def test_unparseable_output_is_degraded_not_an_error() -> None:
    run = (
        await run_plugin_async(Command, instance_id="cmd", command="echo '{not json'")
    ).assert_ok()
    assert run.value("command.ok") == 1
    assert run.health is not None
    assert run.health.state == "degraded"
    assert run.health.message.startswith("output is not valid JSON")


async def test_output_that_is_no_line_protocol_is_degraded() -> None:
    run = (
        await run_plugin_async(Command, instance_id="cmd", command="echo hello world")
    ).assert_ok()
    assert run.health is not None
    assert run.health.state == "degraded"
    assert "not line protocol" in run.health.message


async def test_empty_output_reports_only_the_status() -> None:
    run = (
        await run_plugin_async(Command, instance_id="cmd", command="true", format="json")
    ).assert_ok()
    assert {m.name for m in run.metrics} == {
        "command.ok",
        "command.exit_code",
        "command.timed_out",
        "command.duration",
    }
    assert run.health is None


async def test_a_list_runs_without_a_shell() -> None:
    run = (
        await run_plugin_async(Command, instance_id="cmd", command=["printf", "%s", "$HOME v=1"])
    ).assert_ok()
    assert {m.name for m in run.metrics} >= {"_HOME.v"}


async def test_shell_true_runs_a_list_through_the_shell() -> None:
    run = (
        await run_plugin_async(
            Command,
            instance_id="cmd",
            command=["printf", "'{\"n\": %s}'", "$((6 * 7))"],
            shell=True,
        )
    ).assert_ok()
    assert run.value("n") == 42
    assert run.health is None


async def test_shell_false_splits_a_string_into_arguments() -> None:
    run = (
        await run_plugin_async(
            Command, instance_id="cmd", command="printf '%s' '$HOME v=1'", shell=False
        )
    ).assert_ok()
    assert run.has("_HOME.v")


async def test_env_and_cwd_are_given_to_the_command(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("40")
    run = (
        await run_plugin_async(
            Command,
            instance_id="cmd",
            command='echo "{\\"sum\\": $(( $(cat base.txt) + EXTRA ))}"',
            cwd=str(tmp_path),
            env={"EXTRA": "2"},
        )
    ).assert_ok()
    assert run.value("sum") == 42


def test_env_values_are_secret() -> None:
    config = build_config(CommandConfig, {"command": "true", "env": {"API_KEY": "k3y-value"}})
    assert config_to_dict(config)["env"] == {"API_KEY": REDACTED}
    assert Command.config_schema()["properties"]["env"]["writeOnly"] is True


async def test_a_missing_executable_is_reported_not_raised() -> None:
    run = (
        await run_plugin_async(Command, instance_id="cmd", command=["/nonexistent/homelab-check"])
    ).assert_ok()
    assert run.value("command.exit_code") == 127
    assert run.health is not None
    assert run.health.state == "failing"
    assert run.health.message.startswith("cannot start:")
