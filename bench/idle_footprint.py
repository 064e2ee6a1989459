"""``idle_footprint``: what ``homelab serve`` with the ``system`` plugin costs while idle.

A real ``homelab serve`` process (SQLite in a temporary directory, the ``system`` plugin at a
10 s interval, no clients) is left alone. Once it answers ``/api/health`` and has settled
for 5 s, its resident memory is sampled every second (the maximum counts) and its CPU time
is read at the start and the end of the window (% of one core over the window).

Targets (docs: Performance targets): RSS < 75 MB, CPU < 0.5 % of a core.

The full run watches one server for 60 s (six system runs, one maintenance pass) and then,
for the record, a second server started with ``HOMELAB_LOAD_PLUGINS=system,web`` for 15 s:
how much memory the plugin modules that this configuration does not use cost (they load
only to list their types). ``--quick`` watches one server for 15 s (one or two system
runs), which is why its CPU figure is coarser.

Besides the headline figures, details hold where the memory is (anonymous and file-backed
pages) and how often the process wakes up (voluntary context switches
of every thread, per second) -- an idle process should mostly sleep.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .common import (
    Result,
    cpu_seconds,
    homelab_server,
    log,
    result,
    rss_bytes,
    value_target,
    workdir,
)

INTERVAL = 10.0
SETTLE = 5.0
MB = 1024 * 1024
#: Entry points a ``system``-only server needs: the plugin and ``homelab serve`` itself.
ONLY_USED = {"HOMELAB_LOAD_PLUGINS": "system,web"}


def config(directory: Path) -> str:
    return f"""\
[database]
url = "sqlite://{directory / "homelab.db"}"

[plugins.system]
type = "system"
interval = {INTERVAL:g}
"""


def memory_split(pid: int) -> dict[str, float]:
    """Resident memory (MB) split into anonymous (heap) and file-backed (code, libraries)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            fields[key] = int(parts[0])
    rss, anonymous = fields.get("Rss", 0), fields.get("Anonymous", 0)
    return {
        "anonymous_mb": round(anonymous / 1024, 1),
        "file_backed_mb": round((rss - anonymous) / 1024, 1),
    }


def tasks(pid: int) -> list[Path]:
    return list(Path(f"/proc/{pid}/task").iterdir())


def wakeups(pid: int) -> int:
    """Voluntary context switches of every thread: how often the process went to sleep."""
    total = 0
    for task in tasks(pid):
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def cpu_ns(pid: int) -> int:
    """CPU time of the live threads in nanoseconds (``schedstat``; finer than clock ticks)."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in tasks(pid))


def one_server(window: float, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Start a server, let it settle, and watch it for ``window`` seconds."""
    with workdir("idle") as directory:
        started = time.monotonic()
        with homelab_server(directory, config(directory), env=env) as (_url, proc):
            pid = proc.pid
            ready = time.monotonic() - started
            rss_at_ready = rss_bytes(pid)
            time.sleep(SETTLE)
            cpu0, ns0, wakes0, t0 = cpu_seconds(pid), cpu_ns(pid), wakeups(pid), time.monotonic()
            samples: list[int] = []
            slices: list[float] = []  # CPU % of each 10 s slice (about one system run each)
            slice_start, slice_ns = t0, ns0
            while (elapsed := time.monotonic() - t0) < window:
                samples.append(rss_bytes(pid))
                now = time.monotonic()
                if now - slice_start >= INTERVAL:
                    ns = cpu_ns(pid)
                    slices.append(round(100 * (ns - slice_ns) / 1e9 / (now - slice_start), 3))
                    slice_start, slice_ns = now, ns
                time.sleep(min(1.0, max(0.0, window - elapsed)))
            cpu1, ns1, wakes1, t1 = cpu_seconds(pid), cpu_ns(pid), wakeups(pid), time.monotonic()
            if t1 - slice_start >= INTERVAL / 2:
                slices.append(round(100 * (ns1 - slice_ns) / 1e9 / (t1 - slice_start), 3))
            samples.append(rss_bytes(pid))
            found: dict[str, Any] = {
                "env": dict(env or {}),
                "startup_s": round(ready, 2),
                "rss_at_ready_mb": round(rss_at_ready / MB, 1),
                "rss_max_mb": round(max(samples) / MB, 2),
                "rss_min_mb": round(min(samples) / MB, 2),
                **memory_split(pid),
                "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
                "cpu_pct_schedstat": 100 * (ns1 - ns0) / 1e9 / (t1 - t0),
                "cpu_pct_per_10s_slice": slices,
                "window_s": round(t1 - t0, 2),
                "wakeups_per_s": round((wakes1 - wakes0) / (t1 - t0), 2),
                "threads": len(tasks(pid)),
            }
    log(
        f"server{' ' + str(dict(env)) if env else ''}: RSS max {found['rss_max_mb']:.1f} MB,"
        f" CPU {found['cpu_pct']:.3f} % ({found['cpu_pct_schedstat']:.3f} % by schedstat),"
        f" {found['wakeups_per_s']:.1f} wake-ups/s over {found['window_s']:.0f} s"
    )
    return found


def run(quick: bool) -> list[Result]:
    window = 15.0 if quick else 60.0
    main = one_server(window)
    details: dict[str, Any] = {
        "window_s": window,
        "settle_s": SETTLE,
        "plugin": f"system at {INTERVAL:g} s, SQLite in a temporary directory, no clients",
        "note": (
            "quick: a 15 s window (one or two system runs); CPU resolution 1 clock tick"
            " (0.07 % over 15 s), see cpu_pct_schedstat"
            if quick
            else "a 60 s window: six system runs and one maintenance pass"
        ),
        "server": main,
    }
    if not quick:
        lean = one_server(15.0, ONLY_USED)
        details["only_used_entry_points"] = lean
        details["rss_saved_by_not_importing_unused_plugins_mb"] = round(
            main["rss_max_mb"] - lean["rss_max_mb"], 1
        )
    return [
        result(
            "idle_footprint.rss",
            main["rss_max_mb"],
            "MB",
            value_target("<", 75, "MB"),
            details=details,
        ),
        result(
            "idle_footprint.cpu",
            main["cpu_pct"],
            "% of a core",
            value_target("<", 0.5, "%"),
            details={
                "window_s": window,
                "cpu_pct_schedstat": main["cpu_pct_schedstat"],
                "cpu_pct_per_10s_slice": main["cpu_pct_per_10s_slice"],
                "wakeups_per_s": main["wakeups_per_s"],
                "threads": main["threads"],
            },
        ),
    ]
