"""``rest_latest``: ``GET /api/plugins/{id}/metrics`` under 50 concurrent keep-alive clients.

The subject is a real ``homelab serve`` process (hypercorn, its default server) with one
``command`` instance that reports a fixed set of 24 series every second, so the body keeps
its size (about 4.3 kB). The baseline is a bare Quart route (``bench/bare_rest.py``) that
returns the bytes of that response, fetched once, under hypercorn with the same settings.
The clients (``bench/rest_client.py``) run in a process of their own: 50 keep-alive
connections to each server, one request in flight on each, loading one server at a time in
short segments that alternate between them. The figures are medians over segments (each
segment's throughput and p99), so that a disturbance of the machine costs one segment.
Targets (docs/performance.md): throughput >= 0.8x the bare route's, p99 latency < 25 ms.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from .common import (
    Result,
    free_port,
    homelab_server,
    log,
    median_of,
    python_process,
    ratio_target,
    result,
    rounded,
    value_target,
    wait_http,
    workdir,
)

NAME = "rest_latest"
INSTANCE = "disks"
CONNECTIONS = 50
#: Series the instance reports besides its four ``command.*`` ones.
SERIES = 20
#: (segments per server, measured seconds per segment); the servers alternate.
QUICK = (6, 1.2)
FULL = (15, 5.0)
#: Seconds at the start of each segment that are not counted.
SETTLE = 0.2


def metrics_file(directory: Path) -> Path:
    """A command output of ``SERIES`` labelled series: disks of a small NAS."""
    entries = [
        {
            "name": "disk.used",
            "value": 1.2e12 + i,
            "unit": "bytes",
            "labels": {"device": f"/dev/sd{chr(97 + i)}", "mount": f"/mnt/data{i}"},
            "device_class": "data_size",
        }
        for i in range(SERIES)
    ]
    path = directory / "metrics.json"
    path.write_text(json.dumps(entries))
    return path


def config(directory: Path) -> str:
    output = metrics_file(directory)
    return (
        f'[database]\nurl = "sqlite://{directory / "homelab.db"}"\n\n'
        f'[plugins.{INSTANCE}]\ntype = "command"\ninterval = 1.0\n'
        f'command = ["cat", "{output}"]\nformat = "json"\n'
    )


def wait_for_metrics(url: str, expected: int, timeout: float = 30.0) -> bytes:
    """The body once the instance's first collection is in; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=5)
        if response.status_code == 200 and len(response.json()["metrics"]) == expected:
            return response.content
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not list {expected} metrics within {timeout:g} s")


def load(
    targets: dict[str, tuple[str, int]], directory: Path, segments: int, seconds: float
) -> dict[str, list[dict[str, Any]]]:
    """One client process loading each server in turn, ``segments`` times; its figures."""
    out = directory / "load.json"
    args = [f"{name}={url}" for name, (url, _) in targets.items()]
    args += [f"--pid={name}={pid}" for name, (_, pid) in targets.items()]
    args += ["--connections", str(CONNECTIONS), "--segments", str(segments)]
    args += ["--seconds", str(seconds), "--settle", str(SETTLE), "--out", str(out)]
    budget = len(targets) * segments * (seconds + SETTLE) + 60
    with python_process("rest_client.py", *args, cwd=directory, name="client") as proc:
        code = proc.wait(timeout=budget)
    if code != 0 or not out.exists():
        output = (directory / "client.out").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the load generator failed (exit {code}): {output}")
    figures: dict[str, list[dict[str, Any]]] = json.loads(out.read_text())
    for name, runs in figures.items():
        for run in runs:
            if run["errors"] or set(run["statuses"]) != {"200"}:
                raise RuntimeError(f"{name}: errors {run['errors']}, statuses {run['statuses']}")
    return figures


def run(quick: bool) -> list[Result]:
    segments, seconds = QUICK if quick else FULL
    with workdir(NAME) as directory, homelab_server(directory, config(directory)) as (url, proc):
        path = f"/api/plugins/{INSTANCE}/metrics"
        body = wait_for_metrics(url + path, SERIES + 4)
        (directory / "body.json").write_bytes(body)
        port = free_port()
        bare_url = f"http://127.0.0.1:{port}"
        with python_process(
            "bare_rest.py", str(directory / "body.json"), str(port), cwd=directory, name="bare"
        ) as bare_proc:
            wait_http(bare_url + path, process=bare_proc)
            targets = {"bare": (bare_url + path, bare_proc.pid), "homelab": (url + path, proc.pid)}
            figures = load(targets, directory, segments, seconds)
    bare, subject = figures["bare"], figures["homelab"]
    for n, (b, h) in enumerate(zip(bare, subject, strict=True), 1):
        log(
            f"segment {n}/{segments}: bare {b['throughput']:,.0f} req/s p99 {b['p99_ms']:.1f} ms;"
            f" homelab {h['throughput']:,.0f} req/s p99 {h['p99_ms']:.1f} ms"
        )

    common = {
        "connections": CONNECTIONS,
        "segments": segments,
        "seconds_per_segment": seconds,
        "body_bytes": subject[-1]["body_bytes"],
        "server": "hypercorn (homelab serve defaults), 1 worker, access log off",
    }
    throughput = result(
        f"{NAME}.throughput",
        median_of(subject, "throughput"),
        "req/s",
        ratio_target(">=", 0.8),
        baseline=median_of(bare, "throughput"),
        baseline_name="bare Quart route, same bytes, same server",
        details={
            **common,
            "homelab_per_segment": rounded(subject, "throughput"),
            "bare_per_segment": rounded(bare, "throughput"),
            "reconnects": {  # connections the servers closed while idle (keep-alive timeout)
                "homelab": sum(r["reconnects"] for r in subject),
                "bare": sum(r["reconnects"] for r in bare),
            },
            "homelab_server_cpu_percent": median_of(subject, "server_cpu_percent"),
            "bare_server_cpu_percent": median_of(bare, "server_cpu_percent"),
        },
    )
    p99 = result(
        f"{NAME}.p99",
        median_of(subject, "p99_ms"),
        "ms",
        value_target("<", 25, "ms"),
        baseline=median_of(bare, "p99_ms"),
        baseline_name="bare Quart route p99 (for reference; the target is absolute)",
        details={
            **common,
            "p50_ms": round(median_of(subject, "p50_ms"), 2),
            "p90_ms": round(median_of(subject, "p90_ms"), 2),
            "bare_p50_ms": round(median_of(bare, "p50_ms"), 2),
            "homelab_p99_per_segment": rounded(subject, "p99_ms"),
            "bare_p99_per_segment": rounded(bare, "p99_ms"),
        },
    )
    return [throughput, p99]
