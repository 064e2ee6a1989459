"""``homelab status``: every instance (of the file and of the API) with its enabled state,
health, last run and source.

It reads the database of the config file, or a running server's API with ``--url`` (the
token from ``--token`` or ``$HOMELAB_API_TOKEN``), as ``homelab alerts`` does, with its
helpers. Everything heavy (the store, httpx) is imported inside the command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from .cli_alerts import (
    _api,
    _settings,
    _table,
    _when,
    token_option,
    url_option,
    with_database,
)
from .cli_options import config_option
from .config import Settings
from .lifecycle import resolve_enabled

HEADERS = ["id", "type", "source", "enabled", "health", "last run", "status"]

#: The newest health transition of each instance (the newest id among those of its
#: newest time).
_HEALTH = """
SELECT h.id, h.instance_id, h.new_state FROM homelab_health_transition h
JOIN (SELECT instance_id, MAX(ts) AS ts FROM homelab_health_transition GROUP BY instance_id) n
ON h.instance_id = n.instance_id AND h.ts = n.ts
"""
#: The newest execution of each instance, likewise.
_LAST_RUN = """
SELECT e.id, e.instance_id, e.started_at, e.status FROM homelab_execution e
JOIN (SELECT instance_id, MAX(started_at) AS started_at FROM homelab_execution
      GROUP BY instance_id) n
ON e.instance_id = n.instance_id AND e.started_at = n.started_at
"""


def _newest(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per instance: of rows at the same newest time, the one written last."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = found.get(row["instance_id"])
        if seen is None or row["id"] > seen["id"]:
            found[row["instance_id"]] = row
    return found


def _body(value: Any) -> Mapping[str, Any]:
    """A JSON column as read by a raw query: text on SQLite, already decoded elsewhere."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, Mapping) else {}


def stored_status(settings: Settings) -> list[dict[str, Any]]:
    """The rows of ``homelab status`` from the settings' database: the file's instances
    and those made through the API (``homelab_api_instance``), sorted by id."""
    from .cli import _may_hold_data

    async def read(store: Any) -> tuple[list[dict[str, Any]], ...]:
        return (
            await store.fetch("SELECT id, type, enabled, config_enabled FROM homelab_instance"),
            await store.fetch("SELECT id, type, body FROM homelab_api_instance"),
            await store.fetch(_HEALTH),
            await store.fetch(_LAST_RUN),
        )

    if _may_hold_data(settings.database.url):
        stored, api, health_rows, run_rows = with_database(settings, read)
    else:  # an SQLite file that does not exist yet: nothing ran, and it is not created
        stored, api, health_rows, run_rows = [], [], [], []
    states = {row["id"]: row for row in stored}
    health = _newest(health_rows)
    runs = _newest(run_rows)
    rows: dict[str, dict[str, Any]] = {}
    for instance in settings.plugins.values():
        state = states.get(instance.id)
        enabled = resolve_enabled(
            instance.enabled,
            None if state is None else bool(state["enabled"]),
            None if state is None else bool(state["config_enabled"]),
        )
        rows[instance.id] = {"id": instance.id, "type": instance.type, "enabled": enabled}
    for made in api:
        state = states.get(made["id"])
        body = _body(made["body"])
        enabled = bool(state["enabled"]) if state is not None else body.get("enabled", True)
        rows[made["id"]] = {"id": made["id"], "type": made["type"], "enabled": bool(enabled)}
    api_ids = {made["id"] for made in api}
    for row in rows.values():
        row["source"] = "api" if row["id"] in api_ids else "file"
        found = health.get(row["id"])
        row["health"] = found["new_state"] if found else "unknown"
        run = runs.get(row["id"])
        row["last_run"] = run["started_at"] if run else None
        row["status"] = run["status"] if run else None
    return [rows[key] for key in sorted(rows)]


def served_status(url: str, token: str | None) -> list[dict[str, Any]]:
    """The rows of ``homelab status`` from a running server: ``GET /api/plugins`` and each
    instance's newest execution."""
    rows = []
    for plugin in _api("GET", url, "/api/plugins", token)["plugins"]:
        path = f"/api/plugins/{plugin['id']}/executions?limit=1"
        newest = _api("GET", url, path, token)["executions"]
        rows.append(
            {
                "id": plugin["id"],
                "type": plugin["type"],
                "source": plugin.get("source", "file"),
                "enabled": plugin["enabled"],
                "health": plugin["health"]["state"],
                "last_run": newest[0]["started_at"] if newest else None,
                "status": newest[0]["status"] if newest else None,
            }
        )
    return sorted(rows, key=lambda row: row["id"])


@click.command("status")
@url_option
@token_option
@config_option
def status_command(url: str | None, token: str | None, config: str | None) -> None:
    """List every instance (of the file and of the API): enabled, health, last run, source.

    From the database of --config, or from a running server with --url.
    """
    rows = served_status(url, token) if url else stored_status(_settings(config))
    if not rows:
        click.echo("no instances")
        return
    table = [
        (
            row["id"],
            row["type"],
            row["source"],
            "yes" if row["enabled"] else "no",
            row["health"],
            _when(row["last_run"]),
            row["status"] or "-",
        )
        for row in rows
    ]
    click.echo(_table(table, HEADERS))
