"""The alert commands of ``homelab``: ``alerts``, ``notify-test`` and ``silence``.

``alerts`` and ``silence`` read a running server's API with ``--url`` (the token from
``--token`` or ``$HOMELAB_API_TOKEN``), else the database of the config file. A silence
made or removed in the database reaches a server that runs on that database within 5
seconds (its alert service reads the stored silences that often). Everything heavy (the
store, httpx, the alert service) is imported inside the commands.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio
import click

from .cli_options import config_option
from .config import Settings
from .errors import ConfigError, HomelabError

_T = TypeVar("_T")

#: Seconds a ``homelab notify-test`` send may take unless the notifier sets ``timeout``.
DEFAULT_SEND_TIMEOUT = 10.0


def _settings(config: str | None) -> Settings:
    from .cli import load_configuration

    return load_configuration(config)


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    from .cli import _table as table

    return table(rows, headers)


def _config_failure(message: str) -> click.ClickException:
    from .cli import ConfigFailure

    return ConfigFailure(message)


url_option = click.option(
    "--url",
    default=None,
    metavar="URL",
    help="A running server (http://127.0.0.1:8765); without it, the database is used.",
)
token_option = click.option(
    "--token",
    envvar="HOMELAB_API_TOKEN",
    default=None,
    show_envvar=True,
    help="The server's API token (for --url).",
)


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment).strftime("%Y-%m-%d %H:%M:%S")


def _api(method: str, url: str, path: str, token: str | None, body: Any = None) -> Any:
    """Call a running server's API; a ClickException with its error message on failure."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = url.rstrip("/") + path
    try:
        response = httpx.request(method, target, headers=headers, json=body, timeout=30.0)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {target}: {exc}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        message = error.get("message") if isinstance(error, dict) else response.text[:200]
        raise click.ClickException(f"{target}: {response.status_code}: {message}")
    return data


def _with_store(settings: Settings, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run ``work(alert_store)`` on the settings' database; errors become ClickExceptions."""
    from .store.alerts import AlertStore

    return with_database(settings, lambda store: work(AlertStore(store)))


def with_database(settings: Settings, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Run ``work(store)`` on the settings' database (a :class:`~homelab_core.store.Store`,
    opened and closed around it); errors become ClickExceptions."""
    from .store import Store

    async def run() -> _T:
        store = Store(settings.database.url)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return anyio.run(run)
    except HomelabError as exc:
        raise click.ClickException(str(exc)) from None


# -- homelab alerts ----------------------------------------------------------------------


def _alert_rows(alerts: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    return [
        (
            a["rule"],
            a["state"],
            a["severity"],
            a.get("instance_id") or "-",
            _when(a.get("fired_at") or a.get("active_since")),
            "yes" if a.get("silenced") else "no",
            a.get("summary") or "",
        )
        for a in alerts
    ]


def _stored_alerts(settings: Settings) -> list[dict[str, Any]]:
    """The alerts of the database's state table, as the API lists them."""
    from .alerts.silences import Silence, matches

    async def read(alerts: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await alerts.load_states(), await alerts.silences(ended_after=time.time())

    rows, silences = _with_store(settings, read)
    now = time.time()
    active = [Silence(**s) for s in silences]
    order = {"firing": 0, "pending": 1, "resolved": 2}
    found = []
    for row in rows:
        if row["state"] == "inactive":
            continue
        labels = {str(k): str(v) for k, v in (row["labels"] or {}).items()}
        found.append(
            {
                "rule": row["rule_id"],
                "state": row["state"],
                "severity": labels.get("severity", "-"),
                "instance_id": row["instance_id"],
                "active_since": row["active_since"],
                "fired_at": row["fired_at"],
                "summary": row["summary"],
                "silenced": any(s.active(now) and matches(s.matchers, labels) for s in active),
            }
        )
    found.sort(key=lambda a: (order.get(a["state"], 3), a["rule"]))
    return found


@click.command("alerts")
@click.option(
    "--state",
    type=click.Choice(["pending", "firing", "resolved"]),
    default=None,
    help="Only alerts in this state.",
)
@url_option
@token_option
@config_option
def alerts_command(
    state: str | None, url: str | None, token: str | None, config: str | None
) -> None:
    """Show the current alerts: of a running server (--url), else of the database."""
    if url:
        query = f"?state={state}" if state else ""
        alerts = _api("GET", url, f"/api/alerts{query}", token)["alerts"]
    else:
        alerts = [a for a in _stored_alerts(_settings(config)) if not state or a["state"] == state]
    if not alerts:
        click.echo("no alerts")
        return
    headers = ["rule", "state", "severity", "instance", "since", "silenced", "summary"]
    click.echo(_table(_alert_rows(alerts), headers))


# -- homelab notify-test -----------------------------------------------------------------


@click.command("notify-test")
@click.argument("notifier")
@config_option
@click.pass_context
def notify_test_command(ctx: click.Context, notifier: str, config: str | None) -> None:
    """Send one test message through NOTIFIER (a [notifiers.<id>] table); exit 1 if it fails."""
    from .alerts.dispatch import test_notification
    from .alerts.service import build_notifier

    settings = _settings(config)
    table = settings.alerts.notifiers.get(notifier)
    if table is None:
        known = ", ".join(sorted(settings.alerts.notifiers)) or "none"
        raise _config_failure(f"no [notifiers.{notifier}] table; configured: {known}")
    from .cli import plugin_manager

    try:
        target = build_notifier(table, plugin_manager(ctx), where=settings.source)
    except ConfigError as exc:
        raise _config_failure(str(exc)) from None
    message = test_notification(
        notifier,
        f"Sent by 'homelab notify-test' to check that notifier {notifier!r} works.",
        time.time(),
    )
    timeout = table.timeout or settings.alerts.alerting.send_timeout or DEFAULT_SEND_TIMEOUT

    async def send() -> str | None:
        try:
            with anyio.fail_after(timeout):
                await target.send(message)
        except TimeoutError:
            return f"no answer within {timeout:g} s"
        except Exception as exc:  # what a notifier raises is its report of the failure
            return str(exc) or type(exc).__name__
        finally:
            with anyio.move_on_after(5, shield=True):
                await target.close()
        return None

    error = anyio.run(send)
    if error is not None:
        from .options import secret_values
        from .redact import Redactor

        error = Redactor(secret_values(target.config))(error)
        click.echo(f"error: notifier {notifier!r}: {error}", err=True)
        ctx.exit(1)
    click.echo(f"ok: notifier {notifier!r} ({table.type}) delivered a test message")


# -- homelab silence ---------------------------------------------------------------------


def _matchers(values: Sequence[str]) -> dict[str, str]:
    found = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not label=value", param_hint="--match")
        found[key.strip()] = value.strip()
    return found


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password file
        return ""


def _silence_rows(silences: Sequence[Mapping[str, Any]], now: float) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for s in silences:
        state = "pending" if now < s["starts_at"] else "active" if now < s["ends_at"] else "expired"
        matchers = ",".join(f"{k}={v}" for k, v in sorted(s["matchers"].items()))
        rows.append(
            (
                s["id"],
                state,
                matchers,
                _when(s["starts_at"]),
                _when(s["ends_at"]),
                s.get("author") or "-",
                s.get("comment") or "",
            )
        )
    return rows


@click.group("silence")
def silence_group() -> None:
    """Make, list and remove silences (alerts that match send nothing until they end)."""


@silence_group.command("add")
@click.option(
    "--match",
    "matches",
    multiple=True,
    required=True,
    metavar="LABEL=VALUE",
    help="A label matcher (patterns allowed: instance=nas*); repeatable, all must match.",
)
@click.option("--duration", required=True, help="How long it lasts: seconds, or 30m, 2h, 1d.")
@click.option("--comment", default="", help="Why.")
@click.option("--author", default=None, help="Who (default: your user name).")
@url_option
@token_option
@config_option
def silence_add_command(
    matches: Sequence[str],
    duration: str,
    comment: str,
    author: str | None,
    url: str | None,
    token: str | None,
    config: str | None,
) -> None:
    """Make a silence and print its id."""
    from .alerts.config import parse_duration
    from .alerts.silences import Silence

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--duration") from None
    if seconds <= 0:
        raise click.BadParameter("a silence must last more than 0 seconds", param_hint="--duration")
    matchers = _matchers(matches)
    who = _user() if author is None else author
    if url:
        body = {"matchers": matchers, "duration": seconds, "comment": comment, "author": who}
        made = _api("POST", url, "/api/silences", token, body)
        silence_id, ends_at = made["id"], made["ends_at"]
    else:
        settings = _settings(config)
        try:
            silence = Silence.create(
                matchers, ends_at=time.time() + seconds, comment=comment, author=who
            )
        except HomelabError as exc:
            raise click.ClickException(str(exc)) from None

        async def save(alerts: Any) -> None:
            await alerts.save_silence(silence)

        _with_store(settings, save)
        silence_id, ends_at = silence.id, silence.ends_at
    click.echo(f"{silence_id} (until {_when(ends_at)})")


@silence_group.command("list")
@click.option("--all", "everything", is_flag=True, help="Also the silences that ended.")
@url_option
@token_option
@config_option
def silence_list_command(
    everything: bool, url: str | None, token: str | None, config: str | None
) -> None:
    """List the silences that have not ended."""
    if url:
        query = "?include_expired=true" if everything else ""
        silences = _api("GET", url, f"/api/silences{query}", token)["silences"]
    else:
        after = 0.0 if everything else time.time()

        async def read(alerts: Any) -> list[dict[str, Any]]:
            return await alerts.silences(ended_after=after)  # type: ignore[no-any-return]

        silences = _with_store(_settings(config), read)
    if not silences:
        click.echo("no silences")
        return
    headers = ["id", "state", "matchers", "starts", "ends", "author", "comment"]
    click.echo(_table(_silence_rows(silences, time.time()), headers))


@silence_group.command("remove")
@click.argument("silence_id")
@url_option
@token_option
@config_option
@click.pass_context
def silence_remove_command(
    ctx: click.Context, silence_id: str, url: str | None, token: str | None, config: str | None
) -> None:
    """Remove the silence SILENCE_ID (its alerts may notify at once)."""
    if url:
        _api("DELETE", url, f"/api/silences/{silence_id}", token)
    else:

        async def delete(alerts: Any) -> bool:
            return await alerts.delete_silence(silence_id)  # type: ignore[no-any-return]

        if not _with_store(_settings(config), delete):
            click.echo(f"error: unknown silence {silence_id!r}", err=True)
            ctx.exit(1)
    click.echo(f"removed {silence_id}")


def add_alert_commands(group: click.Group) -> None:
    """Add ``alerts``, ``notify-test`` and ``silence`` to ``group``."""
    for command in (alerts_command, notify_test_command, silence_group):
        group.add_command(command)
