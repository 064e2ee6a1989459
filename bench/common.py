"""What every benchmark shares: results and targets, statistics, and server processes.

A benchmark is a module ``bench/<name>.py`` with ``run(quick: bool) -> list[Result]``. The
runner (``python -m bench``) starts each one in a process of its own, so that one
benchmark's memory, threads and event loop never colour the next one's figures.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    """A bound on a result's ``value`` or on its ``ratio`` to the baseline."""

    subject: str  # "value" or "ratio"
    op: str
    bound: float
    unit: str = ""

    def text(self) -> str:
        unit = f" {self.unit}" if self.unit and self.subject == "value" else ""
        return f"{self.subject} {self.op} {self.bound:g}{unit}"

    def holds(self, value: float | None, ratio: float | None) -> bool:
        measured = value if self.subject == "value" else ratio
        if measured is None or math.isnan(measured):
            return False
        return _COMPARE[self.op](measured, self.bound)


def value_target(op: str, bound: float, unit: str = "") -> Target:
    """A bound on the measured value itself."""
    return Target("value", op, bound, unit)


def ratio_target(op: str, bound: float) -> Target:
    """A bound on value / baseline."""
    return Target("ratio", op, bound)


@dataclass
class Result:
    """One row of ``bench/results.json``."""

    name: str
    value: float | None
    unit: str
    baseline: float | None
    baseline_name: str | None
    ratio: float | None
    target: str
    meets_target: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def result(
    name: str,
    value: float,
    unit: str,
    target: Target,
    *,
    baseline: float | None = None,
    baseline_name: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Result:
    """A result whose ratio and ``meets_target`` are computed from the figures."""
    ratio = None
    if baseline is not None:
        ratio = value / baseline if baseline else math.inf
    return Result(
        name=name,
        value=value,
        unit=unit,
        baseline=baseline,
        baseline_name=baseline_name,
        ratio=ratio,
        target=target.text(),
        meets_target=target.holds(value, ratio),
        details=dict(details or {}),
    )


# -- statistics ----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def median_of(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    """The median of ``row[key]`` over ``rows`` (rounds of one measurement)."""
    return median([row[key] for row in rows])


def rounded(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """``row[key]`` of every round, to two decimals (for details)."""
    return [round(row[key], 2) for row in rows]


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100), nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def log(message: str) -> None:
    """Progress on stderr (stdout carries the results)."""
    print(f"  {message}", file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ``HOMELAB_*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMELAB_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"homelab-bench-{prefix}-") as tmp:
        yield Path(tmp)


def wait_http(
    url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``url`` answers 200 (bounded); fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            code = process.returncode
            raise RuntimeError(f"server exited with code {code} before {url} answered")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@contextlib.contextmanager
def process(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, name: str = "proc"
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` for the block; SIGTERM (then SIGKILL) it afterwards."""
    out = (cwd / f"{name}.out").open("wb")
    proc = subprocess.Popen(
        list(command), cwd=cwd, env=dict(env or clean_env()), stdout=out, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()


@contextlib.contextmanager
def homelab_server(
    directory: Path,
    config: str,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/api/health",
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``homelab serve`` on a free loopback port with ``config``; yields (base URL, process)."""
    port = free_port()
    (directory / "homelab.toml").write_text(config)
    command = [
        sys.executable, "-m", "homelab_core.cli", "serve",
        "--config", str(directory / "homelab.toml"), "--port", str(port),
    ]  # fmt: skip
    with process(command, cwd=directory, env=clean_env(env), name="server") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + ready_path, process=proc)
        yield url, proc


def python_process(
    script: str, *args: str, cwd: Path, env: Mapping[str, str] | None = None, name: str = "proc"
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """A Python script of ``bench/`` run as a process of its own (see :func:`process`)."""
    command = [sys.executable, str(ROOT / "bench" / script), *args]
    return process(command, cwd=cwd, env=clean_env(env), name=name)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
