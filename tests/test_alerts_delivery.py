"""A rule firing and resolving in a real hub reaches real receivers on 127.0.0.1 through
the bundled notifiers: webhook (an HTTP server), ntfy (its publish API served by the
test), email (aiosmtpd with STARTTLS and a login) and apprise (its json:// scheme)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_alerts_service import KNOB, Knob, hub_for, wait_until
from test_notifiers import PASSWORD, certificate, receiver, smtp_server

from homelab_plugins import notifiers

pytestmark = pytest.mark.anyio
__all__ = ["certificate"]  # a fixture, used by name

RULE = """
[alerts.full]
metric = "level"
match = { part = "a" }
threshold = 90
for = 0.4
summary = "{instance} is at {value:.0f} %"
notifiers = ["out"]
"""


def with_notifier(tmp_path: Path, table: str) -> Any:
    hub = hub_for(tmp_path, KNOB.replace('[notifiers.pager]\ntype = "record"\n', "") + table + RULE)
    hub.plugins.register(notifiers, "homelab_plugins.notifiers")
    return hub


async def fire_and_resolve(hub: Any, messages: Callable[[], list[Any]]) -> None:
    async with hub:
        Knob.values["tank"] = 97
        began = time.monotonic()
        await wait_until(lambda: len(messages()) >= 1, timeout=10)
        assert time.monotonic() - began >= 0.4  # not before `for`
        Knob.values["tank"] = 5
        await wait_until(lambda: len(messages()) >= 2, timeout=10)
        await anyio.sleep(0.3)
    assert len(messages()) == 2  # one firing, one resolved: nothing twice


async def test_webhook_receives_one_firing_and_one_resolved_message(tmp_path: Path) -> None:
    with receiver() as got:
        hub = with_notifier(
            tmp_path, f'[notifiers.out]\ntype = "webhook"\nurl = "{got.url}/hook"\n'
        )
        await fire_and_resolve(hub, lambda: got.requests)
    firing, resolved = (r.json() for r in got.requests)
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert firing["alerts"][0]["summary"] == "tank is at 97 %"
    assert resolved["alerts"][0]["summary"] == "tank is at 5 %"
    assert firing["alerts"][0]["fingerprint"] == resolved["alerts"][0]["fingerprint"]


async def test_ntfy_receives_one_firing_and_one_resolved_message(tmp_path: Path) -> None:
    with receiver() as got:
        table = f'[notifiers.out]\ntype = "ntfy"\nserver = "{got.url}"\ntopic = "lab"\n'
        await fire_and_resolve(with_notifier(tmp_path, table), lambda: got.requests)
    firing, resolved = (json.loads(r.body) for r in got.requests)
    assert firing["topic"] == "lab" and "tank is at 97 %" in firing["title"]
    assert "tank is at 5 %" in resolved["message"]


async def test_email_receives_one_firing_and_one_resolved_message(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    with smtp_server(certificate, implicit_tls=False) as box:
        table = f"""[notifiers.out]
type = "email"
host = "127.0.0.1"
port = {box.port}
security = "starttls"
username = "homelab"
password = "{PASSWORD}"
from_address = "homelab@example.org"
to = ["ops@example.org"]
ca_file = "{certificate[0]}"
"""
        await fire_and_resolve(with_notifier(tmp_path, table), lambda: box.messages)
    firing, resolved = box.messages
    assert "tank is at 97 %" in firing["Subject"] and all(box.encrypted)
    assert "tank is at 5 %" in resolved.get_payload()


async def test_apprise_receives_one_firing_and_one_resolved_message(tmp_path: Path) -> None:
    with receiver() as got:
        table = f'[notifiers.out]\ntype = "apprise"\nurls = ["json://127.0.0.1:{got.port}/a"]\n'
        await fire_and_resolve(with_notifier(tmp_path, table), lambda: got.requests)
    firing, resolved = (r.json() for r in got.requests)
    assert "tank is at 97 %" in firing["title"] and "tank is at 5 %" in resolved["message"]
