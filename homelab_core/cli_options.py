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
