"""Options shared by the ``homelab`` commands of several modules."""

from __future__ import annotations

import click

#: ``--config``/``-c``: the file the command reads.
config_option = click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False),
    default=None,
    help="Path of homelab.toml (default: $HOMELAB_CONFIG or ./homelab.toml).",
)

#: ``--node``: this process's node name in a cluster (``[node] name``).
node_option = click.option(
    "--node",
    default=None,
    help="This node's name in a cluster (default: [node] name, else the host name).",
)
