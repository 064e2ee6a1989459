"""Run the benchmarks, print a table and write ``bench/results.json``.

``python -m bench [--quick] [--only NAME ...]``. Each benchmark runs in a process of its own
(``python -m bench --one NAME``); one that fails is reported as a row that misses its target,
and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT

#: The benchmarks, in the order they run (names are a contract: see docs/performance.md).
BENCHMARKS = (
    "ingest",
    "ingest_postgres",
    "history",
    "storage",
    "pipeline",
    "alerts",
    "dashboard",
    "scheduler_scale",
    "rest_latest",
    "websocket_fanout",
    "idle_footprint",
    "scaleout",
    "isolation",
)
RESULTS = ROOT / "bench" / "results.json"
#: Seconds one benchmark may take before it is stopped and reported as failed.
LIMITS = {True: 150.0, False: 900.0}


def run_one(name: str, quick: bool, out: Path) -> None:
    module = importlib.import_module(f"bench.{name}")
    results = module.run(quick)
    out.write_text(json.dumps([r.to_dict() for r in results]))


def failed_row(name: str, reason: str) -> dict[str, Any]:
    return {
        "name": name,
        "value": None,
        "unit": "",
        "baseline": None,
        "baseline_name": None,
        "ratio": None,
        "target": "benchmark completes",
        "meets_target": False,
        "details": {"error": reason},
    }


def run_all(names: list[str], quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, name in enumerate(names, 1):
        label = f"[{index}/{len(names)}] {name}{' (quick)' if quick else ''}"
        print(label, file=sys.stderr, flush=True)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="homelab-bench-") as tmp:
            out = Path(tmp) / "result.json"
            command = [sys.executable, "-m", "bench", "--one", name, "--out", str(out)]
            if quick:
                command.append("--quick")
            try:
                proc = subprocess.run(command, cwd=ROOT, timeout=LIMITS[quick], check=False)
                if proc.returncode == 0 and out.exists():
                    rows.extend(json.loads(out.read_text()))
                else:
                    rows.append(failed_row(name, f"exited with code {proc.returncode}"))
            except subprocess.TimeoutExpired:
                rows.append(failed_row(name, f"did not finish within {LIMITS[quick]:g} s"))
        print(f"      done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    return rows


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    header = ("name", "value", "unit", "baseline", "ratio", "target", "ok")
    lines = [header]
    for r in rows:
        lines.append(
            (
                r["name"],
                _fmt(r["value"]),
                r["unit"],
                f"{_fmt(r['baseline'])} ({r['baseline_name']})" if r["baseline_name"] else "-",
                _fmt(r["ratio"]),
                r["target"],
                "yes" if r["meets_target"] else "NO",
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--one", choices=BENCHMARKS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        run_one(args.one, args.quick, args.out)
        return 0
    started = time.monotonic()
    rows = run_all(list(args.only or BENCHMARKS), args.quick)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    missed = [r["name"] for r in rows if not r["meets_target"]]
    print(
        f"\n{len(rows)} results in {time.monotonic() - started:.0f} s; written to {args.output}."
        + (f" Missed targets: {', '.join(missed)}." if missed else " Every target met."),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
