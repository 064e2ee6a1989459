"""The bundled ``command`` plugin: run a command, report its exit status and parse its output.

The command's standard output is read as JSON or as InfluxDB line protocol (see
:func:`parse_json` and :func:`parse_influx` for exactly what each accepts). The command runs
in a process group of its own, so that when it outlives its timeout (or the run is cancelled)
the whole group, children included, is killed and the process reaped.

A command that fails, hangs or prints nonsense is a measurement, not a failure of the plugin:
the collection succeeds, reports ``command.ok`` 0 and explains in its health.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import anyio
import attrs
from anyio.abc import ByteReceiveStream

from homelab_core import HealthReport, Metric, Plugin, hookimpl, option

#: Bytes of standard output kept; more is an error (monitoring output is small).
MAX_STDOUT = 4 * 1024 * 1024
#: Bytes at the end of standard error kept for the health message.
STDERR_TAIL = 2048
#: Characters of standard error shown in a health message.
MESSAGE_TAIL = 300
#: Seconds given to reaping a killed process group.
REAP_TIMEOUT = 5.0

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
_PRECISION = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_KINDS = frozenset({"gauge", "counter"})


def _not_empty(_: Any, attribute: attrs.Attribute[Any], value: str | list[str]) -> None:
    if (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
        raise ValueError(f"'{attribute.name}' must not be empty")


@attrs.define
class CommandConfig:
    """Options of a ``command`` instance."""

    command: str | list[str] = option(
        description="The command: a string is run through the shell (/bin/sh -c), a list of"
        " arguments is run directly, without a shell.",
        validator=_not_empty,
    )
    shell: bool | None = option(
        None,
        description="Run through the shell; unset: decided by the type of 'command'. A list"
        " run through the shell is joined with spaces (shell syntax in it works), a string"
        " run without one is split with shlex.split.",
    )
    command_timeout: float = option(
        10.0,
        description="Seconds the command may run; then its whole process group is killed.",
        exclusive_minimum=0,
    )
    format: Literal["auto", "json", "influx"] = option(
        "auto",
        description="How to parse standard output: 'json', 'influx' (line protocol) or"
        " 'auto' (JSON when the output starts with '{' or '[', else line protocol).",
    )
    precision: Literal["ns", "us", "ms", "s"] = option(
        "ns", description="Unit of line protocol timestamps."
    )
    cwd: str | None = option(None, description="Working directory; unset: the hub's.")
    env: dict[str, str] = option(
        factory=dict,
        description="Environment variables set for the command, on top of the hub's own."
        " Secret: their values are never shown.",
        secret=True,
    )

    def __attrs_post_init__(self) -> None:
        # ``--set command='["ls", "-l"]'`` arrives as text: a JSON list of strings is a list
        # of arguments (as a shell command it could only fail).
        if isinstance(self.command, str) and self.command.lstrip().startswith("["):
            try:
                parsed = json.loads(self.command)
            except ValueError:
                return
            if isinstance(parsed, list) and parsed and all(isinstance(a, str) for a in parsed):
                self.command = parsed


class OutputError(ValueError):
    """Output that cannot be parsed at all."""


@attrs.frozen
class Parsed:
    """What parsing the output gave: the metrics and the problems met along the way."""

    metrics: list[Metric]
    problems: list[str]


def metric_name(raw: str) -> str:
    """``raw`` made a valid metric name: other characters become '_', a leading '_' if needed."""
    name = _INVALID_NAME_CHARS.sub("_", raw)
    if not name or not (name[0].isascii() and (name[0].isalpha() or name[0] == "_")):
        name = "_" + name
    return name


def _number(value: Any) -> float | None:
    """``value`` as a finite float if it is a JSON number or boolean, else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        result = float(value)
        return result if math.isfinite(result) else None
    return None


# -- JSON ------------------------------------------------------------------------------------


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else str(key), item)
        return
    number = _number(value)
    if number is not None:
        yield prefix, number


def _json_entry(index: int, entry: Any) -> Metric:
    if not isinstance(entry, Mapping):
        raise ValueError(f"item {index} is a {type(entry).__name__}, not an object")
    unknown = sorted(
        set(entry) - {"name", "value", "unit", "labels", "kind", "device_class", "timestamp"}
    )
    if unknown:
        raise ValueError(f"item {index} has unknown keys: {', '.join(unknown)}")
    name, value = entry.get("name"), _number(entry.get("value"))
    if not isinstance(name, str) or not name:
        raise ValueError(f"item {index} has no 'name' string")
    if value is None:
        raise ValueError(f"item {index} ({name}) has no numeric 'value'")
    unit = entry.get("unit", "")
    labels = entry.get("labels") or {}
    kind = entry.get("kind", "gauge")
    device_class = entry.get("device_class")
    timestamp = entry.get("timestamp")
    if not isinstance(unit, str):
        raise ValueError(f"item {index} ({name}): 'unit' must be a string")
    if not isinstance(labels, Mapping) or not all(
        isinstance(v, str | int | float) for v in labels.values()
    ):
        raise ValueError(f"item {index} ({name}): 'labels' must map names to strings")
    if kind not in _KINDS:
        raise ValueError(f"item {index} ({name}): 'kind' must be 'gauge' or 'counter'")
    if device_class is not None and not isinstance(device_class, str):
        raise ValueError(f"item {index} ({name}): 'device_class' must be a string")
    if timestamp is not None and _number(timestamp) is None:
        raise ValueError(f"item {index} ({name}): 'timestamp' must be seconds since the epoch")
    return Metric(
        metric_name(name),
        value,
        unit,
        {str(k): str(v) for k, v in labels.items()},
        timestamp=_number(timestamp),
        kind=kind,
        device_class=device_class,
    )


def parse_json(text: str) -> Parsed:
    """Metrics from JSON output.

    Two shapes are accepted:

    - an object of name -> number; nested objects are flattened with '.' (``{"disk":
      {"used": 3}}`` is ``disk.used``), booleans count as 1/0, other values (strings, null,
      lists) are skipped;
    - a list of objects with ``name`` and ``value`` (number or boolean), and optionally
      ``unit`` (string), ``labels`` (object of strings or numbers), ``kind`` ("gauge" or
      "counter"), ``device_class`` (string) and ``timestamp`` (seconds since the epoch).
      An invalid item is skipped and named among the problems.

    Names are made valid metric names (see :func:`metric_name`).
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OutputError(f"output is not valid JSON: {exc}") from None
    if isinstance(data, Mapping):
        return Parsed([Metric(metric_name(n), v) for n, v in _flatten("", data)], [])
    if isinstance(data, list):
        metrics, problems = [], []
        for index, entry in enumerate(data):
            try:
                metrics.append(_json_entry(index, entry))
            except ValueError as exc:
                problems.append(str(exc))
        return Parsed(metrics, problems)
    raise OutputError(
        f"JSON output must be an object or a list of objects, got {type(data).__name__}"
    )


# -- Influx line protocol ----------------------------------------------------------------------


def _split(text: str, separator: str, *, quotes: bool = False, limit: int = -1) -> list[str]:
    """Split on ``separator`` where not escaped by a backslash (nor inside double quotes)."""
    parts, current, quoted, index = [], [], False, 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current.append(text[index : index + 2])
            index += 2
            continue
        if quotes and char == '"':
            quoted = not quoted
        elif char == separator and not quoted and limit != 0:
            parts.append("".join(current))
            current = []
            limit -= 1
            index += 1
            continue
        current.append(char)
        index += 1
    if quoted:
        raise ValueError("unterminated string field value")
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    r"""Undo the line protocol's escapes ``\,``, ``\=``, ``\ `` (other backslashes stay)."""
    return re.sub(r"\\([, =])", r"\1", text)


def _field_value(raw: str) -> float | None:
    """A field's value as a float; None for string values, which are skipped."""
    if raw.startswith('"'):
        return None
    if raw in _TRUE:
        return 1.0
    if raw in _FALSE:
        return 0.0
    if raw[-1:] in ("i", "u"):
        try:
            return float(int(raw[:-1]))
        except ValueError:
            raise ValueError(f"bad integer field value {raw!r}") from None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"bad field value {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"field value {raw!r} is not finite")
    return value


def parse_influx_line(line: str, precision: str = "ns") -> list[Metric]:
    """Metrics of one line of line protocol: ``measurement.field`` for each numeric field."""
    sections = _split(line, " ", quotes=True)
    sections = [s for s in sections if s]  # tolerate repeated spaces between sections
    if len(sections) < 2:
        raise ValueError("expected 'measurement[,tags] fields [timestamp]'")
    if len(sections) > 3:
        raise ValueError("unexpected text after the timestamp")
    head, *tags = _split(sections[0], ",")
    measurement = _unescape(head)
    if not measurement:
        raise ValueError("missing measurement")
    labels = {}
    for tag in tags:
        key_value = _split(tag, "=")
        if len(key_value) != 2 or not key_value[0] or not key_value[1]:
            raise ValueError(f"bad tag {tag!r}")
        labels[_unescape(key_value[0])] = _unescape(key_value[1])
    timestamp = None
    if len(sections) == 3:
        try:
            timestamp = int(sections[2]) * _PRECISION[precision]
        except ValueError:
            raise ValueError(f"bad timestamp {sections[2]!r}") from None
    metrics = []
    for field in _split(sections[1], ",", quotes=True):
        key_value = _split(field, "=", quotes=True, limit=1)
        if len(key_value) != 2 or not key_value[0] or not key_value[1]:
            raise ValueError(f"bad field {field!r}")
        value = _field_value(key_value[1])
        if value is not None:
            name = metric_name(f"{measurement}.{_unescape(key_value[0])}")
            metrics.append(Metric(name, value, labels=labels, timestamp=timestamp))
    return metrics


def parse_influx(text: str, precision: str = "ns") -> Parsed:
    """Metrics from line protocol output; a bad line is skipped and named among the problems.

    Empty lines and lines starting with '#' are ignored. Output in which no line parses is
    an :class:`OutputError`.
    """
    metrics: list[Metric] = []
    problems: list[str] = []
    lines = 0
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        lines += 1
        try:
            metrics += parse_influx_line(line, precision)
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if lines and len(problems) == lines:
        raise OutputError(f"output is not line protocol ({problems[0]})")
    return Parsed(metrics, problems)


def parse_output(text: str, format: str, precision: str = "ns") -> Parsed:
    """Parse standard output in ``format`` ("json", "influx" or "auto")."""
    if not text.strip():
        return Parsed([], [])
    if format == "auto":
        format = "json" if text.lstrip()[:1] in ("{", "[") else "influx"
    if format == "json":
        return parse_json(text)
    return parse_influx(text, precision)


# -- running the command -----------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """How one run of the command went."""

    returncode: int
    duration: float
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    start_error: str | None = None


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(pid, signal.SIGKILL)


async def _read(stream: ByteReceiveStream | None, sink: bytearray, limit: int, tail: bool) -> None:
    if stream is None:
        return
    async for chunk in stream:
        sink += chunk
        if len(sink) > limit:
            if tail:
                del sink[:-limit]
            else:
                del sink[limit:]


async def run_command(
    argv: str | list[str], *, timeout: float, cwd: str | None, env: Mapping[str, str] | None
) -> Outcome:
    """Run ``argv`` (a string: through the shell) in a new process group, killed on timeout."""
    started = time.perf_counter()
    try:
        process = await anyio.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        code = 126 if isinstance(exc, PermissionError) else 127
        return Outcome(
            code, time.perf_counter() - started, b"", b"", start_error=str(exc) or repr(exc)
        )
    stdout, stderr = bytearray(), bytearray()
    finished = False
    try:
        with anyio.move_on_after(timeout):
            async with anyio.create_task_group() as group:
                group.start_soon(_read, process.stdout, stdout, MAX_STDOUT + 1, False)
                group.start_soon(_read, process.stderr, stderr, STDERR_TAIL, True)
                await process.wait()
            finished = True
    finally:
        # Timed out, or the run itself was cancelled: kill the whole group (the command and
        # whatever it started that still holds its output open), then reap the command.
        if not finished:
            _kill_group(process.pid)
        with anyio.CancelScope(shield=True), anyio.move_on_after(REAP_TIMEOUT):
            await process.aclose()
    timed_out = not finished
    returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
    return Outcome(
        returncode, time.perf_counter() - started, bytes(stdout), bytes(stderr), timed_out
    )


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    if len(text) > MESSAGE_TAIL:
        text = "…" + text[-MESSAGE_TAIL:]
    return text


class Command(Plugin[CommandConfig]):
    """Runs a command and reports its status and the metrics it prints."""

    name = "command"
    title = "Command"
    category = "other"
    description = (
        "Runs a command with a timeout; reports its exit status and duration, and the"
        " metrics it prints as JSON or Influx line protocol."
    )
    version = "1.0.0"
    default_interval = 60.0

    _health: HealthReport | None = None

    def _argv(self) -> str | list[str]:
        command, shell = self.config.command, self.config.shell
        if shell is None:
            return command
        if shell:
            return command if isinstance(command, str) else " ".join(command)
        return shlex.split(command) if isinstance(command, str) else list(command)

    async def collect(self) -> list[Metric]:
        """Run the command once and turn what it did and printed into metrics."""
        env = {**os.environ, **self.config.env} if self.config.env else None
        outcome = await run_command(
            self._argv(), timeout=self.config.command_timeout, cwd=self.config.cwd, env=env
        )
        ok = outcome.returncode == 0 and not outcome.timed_out
        metrics = [
            Metric("command.ok", ok),
            Metric("command.exit_code", outcome.returncode),
            Metric("command.timed_out", outcome.timed_out),
            Metric("command.duration", outcome.duration, "s", device_class="duration"),
        ]
        self._health = None
        parsed = Parsed([], [])
        if not outcome.timed_out and outcome.start_error is None:
            try:
                if len(outcome.stdout) > MAX_STDOUT:
                    raise OutputError(f"output is longer than {MAX_STDOUT} bytes")
                text = outcome.stdout.decode(errors="replace")
                parsed = parse_output(text, self.config.format, self.config.precision)
            except OutputError as exc:
                if ok:
                    self._health = HealthReport("degraded", str(exc))
        metrics += parsed.metrics
        stderr = _tail(outcome.stderr)
        detail = f": {stderr}" if stderr else ""
        if outcome.start_error is not None:
            self._health = HealthReport("failing", f"cannot start: {outcome.start_error}")
        elif outcome.timed_out:
            self._health = HealthReport(
                "failing",
                f"timed out after {self.config.command_timeout:g} s and was killed{detail}",
            )
        elif outcome.returncode != 0:
            if outcome.returncode < 0:
                how = f"was killed by signal {-outcome.returncode}"
            else:
                how = f"exited with status {outcome.returncode}"
            self._health = HealthReport("failing", how + detail)
        elif self._health is None and parsed.problems:
            more = f" (and {len(parsed.problems) - 1} more)" if len(parsed.problems) > 1 else ""
            self._health = HealthReport("degraded", f"skipped {parsed.problems[0]}{more}")
        return metrics

    def health(self) -> HealthReport | None:
        """Failing when the command failed or timed out, degraded when its output was bad."""
        return self._health


@hookimpl
def register_plugins(register: Callable[[type[Plugin]], None]) -> None:
    """Contribute the ``command`` plugin type."""
    register(Command)
