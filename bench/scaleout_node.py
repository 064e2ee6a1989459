"""A node of ``scaleout``'s pipeline measurement, run as a process of its own.

``python bench/scaleout_node.py CONFIG NODE``: ``homelab agent``'s own loop
(:func:`homelab_core.cli_agent.run_agent`) on the settings of ``CONFIG`` as node ``NODE``,
with the benchmark's plugin types (``bench_burst``), which ``homelab agent`` cannot load (they
have no entry point). Stops on SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import plugins
from homelab_core.cli_agent import run_agent
from homelab_core.config import load_settings


def main() -> int:
    config, node = sys.argv[1], sys.argv[2]
    settings = load_settings(config)
    settings.node.name = node
    failure = anyio.run(run_agent, settings, plugins.manager())
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
