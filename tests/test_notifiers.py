"""The bundled notifiers against real receivers on 127.0.0.1: an HTTP server that records
what it is sent (webhook, ntfy's publish API, Apprise's json://), aiosmtpd with STARTTLS,
implicit TLS and login, and the ``log`` notifier through caplog."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import shutil
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import attrs
import pytest
from services import free_port, unavailable

import homelab_plugins.notifiers as notifiers
from homelab_core import (
    AlertNotice,
    Notification,
    Notifier,
    NotifierError,
    PluginManager,
    hookimpl,
)
from homelab_core.errors import ConfigError, PluginLoadError
from homelab_core.options import build_config

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

#: Secrets used in the tests: none may appear in an error or a repr.
TOKEN = "tk_sEcReT-token-0123"
PASSWORD = "pa55-SeCrEt-word"
HMAC_KEY = "hmac-KEY-secret-42"
#: Each send must end well before this (a hang fails the test, not the run).
SEND_LIMIT = 10.0


# -- receivers -----------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """What an HTTP receiver got, and what it answers."""

    port: int = 0
    status: int = 200
    answer: bytes = b'{"id":"x"}'
    requests: list[Request] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def receiver(status: int = 200, answer: bytes = b'{"id":"x"}') -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that records every request and answers ``status``."""
    got = Receiver(status=status, answer=answer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            got.requests.append(Request("POST", self.path, headers, body))
            self.send_response(got.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(got.answer)))
            self.end_headers()
            self.wfile.write(got.answer)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    got.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    if not shutil.which("openssl"):
        unavailable("the openssl command line tool is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@dataclass
class Mailbox:
    port: int
    messages: list[Any] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    #: Whether the connection was encrypted when each message came in.
    encrypted: list[bool] = field(default_factory=list)


@contextmanager
def smtp_server(certificate: tuple[Path, Path], *, implicit_tls: bool) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1 requiring TLS (STARTTLS, or TLS from the start) and a login
    as ``homelab`` with :data:`PASSWORD`."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    box = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(message_from_bytes(envelope.content))
            box.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        box.logins.append((login, password))
        return AuthResult(success=login == "homelab" and password == PASSWORD, handled=False)

    options: dict[str, Any] = {"authenticator": authenticator}
    if implicit_tls:
        # aiosmtpd offers AUTH over TLS only after STARTTLS: on an implicit TLS connection
        # it must be told not to ask for it (the connection is encrypted all the same).
        options["auth_require_tls"] = False
        controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=box.port,
            ssl_context=context,
            server_hostname="localhost",
            **options,
        )
    else:
        options |= {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
        controller = Controller(Handler(), hostname="127.0.0.1", port=box.port, **options)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


# -- helpers -------------------------------------------------------------------------------


def make(kind: type[Notifier], options: dict[str, Any], notifier_id: str = "n1") -> Any:
    """A notifier built from a ``[notifiers.<id>]`` table's options, as the service does."""
    config = build_config(kind.Config, options, table=f"notifiers.{notifier_id}")
    return kind(config, notifier_id=notifier_id)


def alert(status: str = "firing", **changes: Any) -> AlertNotice:
    values: dict[str, Any] = {
        "rule": "disk-full",
        "fingerprint": "f00d",
        "status": status,
        "severity": "critical",
        "labels": {"mount": "/srv", "instance": "nas"},
        "summary": "/srv on nas is 93 % full",
        "description": "Free some space.",
        "value": 93.5,
        "instance_id": "nas-disk",
        "started_at": 1_700_000_000.5,
        "resolved_at": 1_700_000_600.0 if status == "resolved" else None,
    }
    return AlertNotice(**(values | changes))


def notification(status: str = "firing", severity: str = "critical", **changes: Any) -> Any:
    values: dict[str, Any] = {
        "notifier": "n1",
        "group": "route-1:mount=/srv",
        "status": status,
        "alerts": [alert(status, severity=severity)],
        "title": f"[{status.upper()}:1] disk-full: /srv on nas is 93 % full",
        "text": "disk-full: /srv on nas is 93 % full\nFree some space.",
        "severity": severity,
    }
    return Notification(**(values | changes))


async def send(notifier: Notifier, what: Notification) -> None:
    with anyio.fail_after(SEND_LIMIT):
        try:
            await notifier.send(what)
        finally:
            await notifier.close()


async def failure(notifier: Notifier, what: Notification | None = None) -> str:
    """The message of the :class:`NotifierError` that sending raises."""
    with pytest.raises(NotifierError) as caught:
        await send(notifier, what or notification())
    return str(caught.value)


def assert_no_secret(text: str) -> None:
    for secret in (TOKEN, PASSWORD, HMAC_KEY):
        assert secret not in text


# -- registration --------------------------------------------------------------------------


def registering(notifier_type: type) -> SimpleNamespace:
    """A plugin module stand-in whose ``register_notifiers`` registers ``notifier_type``."""

    @hookimpl
    def register_notifiers(register: Any) -> None:
        register(notifier_type)

    return SimpleNamespace(register_notifiers=register_notifiers)


def test_hook_register_notifiers() -> None:
    manager = PluginManager(load_entry_points=False, log_errors=False)
    manager.register(notifiers, name="notifiers")
    types = manager.notifier_types()
    assert set(types) == {"webhook", "ntfy", "email", "apprise", "log"}
    assert manager.get_notifier_type("ntfy") is notifiers.Ntfy
    assert manager.load_errors == []

    class NoSend(Notifier):
        name = "nosend"

    class Other(Notifier):
        name = "webhook"  # taken by the bundled one

        async def send(self, notification: Notification) -> None:
            pass

    manager.register(registering(NoSend), name="bad")
    manager.register(registering(Other), name="dup")
    types = manager.notifier_types()
    assert types["webhook"] is notifiers.Webhook
    assert "nosend" not in types
    errors = {error.entry_point: error for error in manager.load_errors}
    assert set(errors) == {"bad", "dup"}
    assert all(isinstance(error, PluginLoadError) for error in errors.values())
    assert errors["bad"].hook == "register_notifiers"
    assert "'bad'" in str(errors["bad"]) and "does not implement send()" in str(errors["bad"])
    assert "'dup'" in str(errors["dup"]) and "'webhook'" in str(errors["dup"])
    assert "already registered" in str(errors["dup"])


def test_no_option_uses_a_name_of_the_framework() -> None:
    """``type``, ``timeout`` and ``send_resolved`` belong to the ``[notifiers.<id>]`` table."""
    for kind in (notifiers.Webhook, notifiers.Ntfy, notifiers.Email, notifiers.Apprise):
        names = {f.name for f in attrs.fields(kind.Config)}
        assert not names & {"type", "timeout", "send_resolved"}, kind.name
    assert not {f.name for f in attrs.fields(notifiers.Log.Config)} & {"type", "timeout"}


@pytest.mark.parametrize(
    ("kind", "options", "field_name"),
    [
        (notifiers.Webhook, {"url": "ftp://example.org"}, "url"),
        (notifiers.Ntfy, {"topic": "a/b"}, "topic"),
        (notifiers.Ntfy, {"topic": "t", "priority": 6}, "priority"),
        (notifiers.Email, {"host": "h", "from_address": "me", "to": ["a@b"]}, "from_address"),
        (notifiers.Email, {"host": "h", "from_address": "a@b", "to": []}, "to"),
        (
            notifiers.Email,
            {"host": "h", "from_address": "a@b", "to": ["a@b"], "security": "x"},
            "security",
        ),
        (notifiers.Apprise, {"urls": []}, "urls"),
    ],
)
def test_bad_options_are_config_errors_naming_the_field(
    kind: type[Notifier], options: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(kind.Config, options, file="homelab.toml", table="notifiers.n1")
    text = str(caught.value)
    assert "homelab.toml" in text and "notifiers.n1" in text and field_name in text


def test_secrets_never_show_in_a_repr() -> None:
    configs = [
        make(notifiers.Webhook, {"url": "http://h/", "headers": {"X-Key": TOKEN}}).config,
        make(notifiers.Webhook, {"url": "http://h/", "hmac_secret": HMAC_KEY}).config,
        make(notifiers.Ntfy, {"topic": "t", "token": TOKEN}).config,
        make(notifiers.Ntfy, {"topic": "t", "username": "u", "password": PASSWORD}).config,
        make(
            notifiers.Email,
            {"host": "h", "from_address": "a@b", "to": ["c@d"], "username": "u",
             "password": PASSWORD},
        ).config,
        make(notifiers.Apprise, {"urls": [f"tgram://{TOKEN}/123"]}).config,
        make(notifiers.Webhook, {"url": f"http://u:{PASSWORD}@h/"}).config,
    ]  # fmt: skip
    for config in configs:
        assert_no_secret(repr(config))
        assert_no_secret(str(config))


# -- webhook -------------------------------------------------------------------------------


async def test_webhook_posts_the_whole_notification_signed() -> None:
    with receiver() as got:
        notifier = make(
            notifiers.Webhook,
            {
                "url": f"http://hook:{PASSWORD}@127.0.0.1:{got.port}/hooks/homelab?x=1",
                "headers": {"X-Api-Key": TOKEN},
                "hmac_secret": HMAC_KEY,
            },
        )
        sent = notification(test=True)
        await send(notifier, sent)
    [request] = got.requests
    assert request.path == "/hooks/homelab?x=1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == TOKEN
    assert (
        request.headers["authorization"]
        == "Basic " + base64.b64encode(f"hook:{PASSWORD}".encode()).decode()
    )
    # The signature is the HMAC-SHA256 of the exact bytes received.
    expected = hmac.new(HMAC_KEY.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-homelab-signature"] == f"sha256={expected}"
    body = request.json()
    assert request.headers["x-homelab-timestamp"] == str(body["sent_at"])
    assert body == {
        "version": 1,
        "notifier": "n1",
        "group": "route-1:mount=/srv",
        "status": "firing",
        "severity": "critical",
        "title": sent.title,
        "text": sent.text,
        "test": True,
        "sent_at": body["sent_at"],
        "alerts": [
            {
                "rule": "disk-full",
                "fingerprint": "f00d",
                "status": "firing",
                "severity": "critical",
                "labels": {"mount": "/srv", "instance": "nas"},
                "summary": "/srv on nas is 93 % full",
                "description": "Free some space.",
                "value": 93.5,
                "instance_id": "nas-disk",
                "started_at": 1_700_000_000.5,
                "resolved_at": None,
            }
        ],
    }
    # Every field of AlertNotice is in the body.
    assert set(body["alerts"][0]) == {f.name for f in attrs.fields(AlertNotice)}


async def test_webhook_without_secret_is_not_signed_and_nan_is_null() -> None:
    with receiver() as got:
        notifier = make(notifiers.Webhook, {"url": f"{got.url}/h"})
        what = notification("resolved", alerts=[alert("resolved", value=float("nan"))])
        await send(notifier, what)
    [request] = got.requests
    assert "x-homelab-signature" not in request.headers
    assert "authorization" not in request.headers
    body = request.json()
    assert body["status"] == "resolved"
    assert body["alerts"][0]["value"] is None
    assert body["alerts"][0]["resolved_at"] == 1_700_000_600.0


async def test_webhook_error_answer_is_a_notifier_error_naming_the_status() -> None:
    # The receiver echoes the secret header: the error must not repeat it.
    answer = f"internal error while handling key {TOKEN}".encode()
    with receiver(status=500, answer=answer) as got:
        notifier = make(
            notifiers.Webhook,
            {"url": f"{got.url}/secret-path/{TOKEN}", "headers": {"X-Api-Key": TOKEN}},
        )
        message = await failure(notifier)
    assert len(got.requests) == 1  # one try: retrying is the service's job
    assert f"webhook http://127.0.0.1:{got.port} answered 500 Internal Server Error" in message
    assert "internal error while handling key" in message
    assert "secret-path" not in message
    assert_no_secret(message)


async def test_webhook_to_a_closed_port_is_a_notifier_error() -> None:
    port = free_port()
    notifier = make(notifiers.Webhook, {"url": f"http://u:{PASSWORD}@127.0.0.1:{port}/"})
    message = await failure(notifier)
    assert f"cannot send to webhook http://127.0.0.1:{port}" in message
    assert_no_secret(message)


# -- ntfy ----------------------------------------------------------------------------------


async def test_ntfy_publishes_json_to_the_server_root_with_a_token() -> None:
    with receiver() as got:
        notifier = make(
            notifiers.Ntfy,
            {"server": f"{got.url}/ntfy", "topic": "homelab-alerts", "token": TOKEN,
             "tags": ["nas"], "click": "https://homelab.lan/"},
        )  # fmt: skip
        sent = notification()
        await send(notifier, sent)
    [request] = got.requests
    assert request.path == "/ntfy/"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.json() == {
        "topic": "homelab-alerts",
        "title": sent.title,
        "message": sent.text,
        "priority": 5,
        "tags": ["rotating_light", "nas"],
        "click": "https://homelab.lan/",
    }


@pytest.mark.parametrize(
    ("status", "severity", "priority", "tag"),
    [
        ("firing", "warning", 4, "warning"),
        ("firing", "info", 3, "information_source"),
        ("resolved", "critical", 3, "white_check_mark"),
    ],
)
async def test_ntfy_priority_follows_the_severity_with_basic_auth(
    status: str, severity: str, priority: int, tag: str
) -> None:
    with receiver() as got:
        notifier = make(
            notifiers.Ntfy,
            {"server": got.url, "topic": "t", "username": "phil", "password": PASSWORD},
        )
        await send(notifier, notification(status, severity))
    [request] = got.requests
    assert request.path == "/"
    assert request.headers["authorization"] == (
        "Basic " + base64.b64encode(f"phil:{PASSWORD}".encode()).decode()
    )
    body = request.json()
    assert body["topic"] == "t"
    assert (body["priority"], body["tags"]) == (priority, [tag])


async def test_ntfy_refusal_names_status_and_ntfy_error_without_the_token() -> None:
    answer = b'{"code":40101,"http":401,"error":"unauthorized","link":"https://ntfy.sh/docs"}'
    with receiver(status=401, answer=answer) as got:
        notifier = make(notifiers.Ntfy, {"server": got.url, "topic": "t", "token": TOKEN})
        message = await failure(notifier)
    assert (
        message
        == f"ntfy server http://127.0.0.1:{got.port} answered 401 Unauthorized: unauthorized"
    )


# -- email ---------------------------------------------------------------------------------


def email_options(box: Mailbox, cert: Path, **changes: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": box.port,
        "from_address": "Homelab <homelab@example.org>",
        "to": ["ops@example.org", "me@example.org"],
        "username": "homelab",
        "password": PASSWORD,
        "ca_file": str(cert),
    } | changes


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_is_sent_over_tls_after_login(
    certificate: tuple[Path, Path], security: str
) -> None:
    with smtp_server(certificate, implicit_tls=security == "tls") as box:
        notifier = make(notifiers.Email, email_options(box, certificate[0], security=security))
        sent = notification()
        await send(notifier, sent)
    assert box.logins == [("homelab", PASSWORD)]
    [mail] = box.messages
    assert box.encrypted == [True]
    assert mail["Subject"] == sent.title
    assert mail["From"] == "Homelab <homelab@example.org>"
    assert mail["To"] == "ops@example.org, me@example.org"
    assert mail["X-Homelab-Status"] == "firing"
    assert mail.get_content_type() == "text/plain"
    assert mail.get_payload(decode=True).decode().replace("\r\n", "\n").strip() == sent.text


async def test_email_wrong_password_is_a_notifier_error(certificate: tuple[Path, Path]) -> None:
    wrong = "wrong-" + PASSWORD[::-1]
    with smtp_server(certificate, implicit_tls=False) as box:
        notifier = make(notifiers.Email, email_options(box, certificate[0], password=wrong))
        message = await failure(notifier)
    assert box.messages == []
    assert f"SMTP server 127.0.0.1:{box.port} refused the login of 'homelab': 535" in message
    assert wrong not in message


async def test_email_untrusted_certificate_is_a_notifier_error(
    certificate: tuple[Path, Path],
) -> None:
    with smtp_server(certificate, implicit_tls=False) as box:
        options = email_options(box, certificate[0])
        del options["ca_file"]  # the system's CAs do not know the self-signed certificate
        message = await failure(make(notifiers.Email, options))
    assert box.messages == [] and box.logins == []
    assert f"SMTP server 127.0.0.1:{box.port}" in message
    assert "certificate" in message.lower()
    assert_no_secret(message)


async def test_email_to_a_closed_port_is_a_notifier_error() -> None:
    port = free_port()
    options = {"host": "127.0.0.1", "port": port, "from_address": "a@b", "to": ["c@d"]}
    message = await failure(make(notifiers.Email, options))
    assert f"127.0.0.1:{port}" in message


# -- apprise -------------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_apprise_posts_through_its_json_scheme(anyio_backend: str) -> None:
    """Apprise's async API under asyncio; its blocking one in a worker thread under trio."""
    with receiver() as got:
        notifier = make(notifiers.Apprise, {"urls": [f"json://127.0.0.1:{got.port}/apprise"]})
        sent = notification()
        await send(notifier, sent)
    [request] = got.requests
    assert request.path == "/apprise"
    body = request.json()
    assert body["title"] == sent.title
    assert body["message"] == sent.text
    assert body["type"] == "failure"


async def test_apprise_failure_is_a_notifier_error_naming_the_url() -> None:
    with receiver() as ok, receiver(status=500, answer=b"no") as broken:
        urls = [f"json://127.0.0.1:{ok.port}/a", f"json://u:{PASSWORD}@127.0.0.1:{broken.port}/b"]
        message = await failure(make(notifiers.Apprise, {"urls": urls}))
    assert len(ok.requests) == 1 and len(broken.requests) == 1
    assert message.startswith("Apprise could not deliver to URL 2 (json://) of 2")
    assert_no_secret(message)


async def test_apprise_url_it_does_not_know_is_a_notifier_error() -> None:
    notifier = make(notifiers.Apprise, {"urls": [f"nosuchservice://{TOKEN}@x/"]})
    message = await failure(notifier)
    assert "URL 1 (scheme 'nosuchservice')" in message
    assert_no_secret(message)


async def test_apprise_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # what `import apprise` finds: nothing
    message = await failure(make(notifiers.Apprise, {"urls": ["json://127.0.0.1/"]}))
    assert "pip install 'homelab-core[apprise]'" in message


# -- log -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "severity", "level"),
    [
        ("firing", "critical", logging.CRITICAL),
        ("firing", "warning", logging.WARNING),
        ("firing", "info", logging.INFO),
        ("resolved", "critical", logging.INFO),
    ],
)
async def test_log_writes_at_the_severity_level(
    caplog: pytest.LogCaptureFixture, status: str, severity: str, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="homelab.notify.mylog")
    sent = notification(status, severity)
    await send(make(notifiers.Log, {}, "mylog"), sent)
    [record] = [r for r in caplog.records if r.name == "homelab.notify.mylog"]
    assert record.levelno == level
    assert record.getMessage() == f"{sent.title}\n{sent.text}"


async def test_log_json_format_writes_the_webhook_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="homelab.notify.j")
    await send(make(notifiers.Log, {"format": "json"}, "j"), notification())
    [record] = [r for r in caplog.records if r.name == "homelab.notify.j"]
    body = json.loads(record.getMessage())
    assert body["version"] == 1 and body["alerts"][0]["rule"] == "disk-full"


# -- docs/alerts.md ------------------------------------------------------------------------

ALERTS_MD = Path(__file__).resolve().parent.parent / "docs" / "alerts.md"
BUNDLED = (notifiers.Webhook, notifiers.Ntfy, notifiers.Email, notifiers.Apprise, notifiers.Log)


def notifiers_section() -> str:
    text = ALERTS_MD.read_text(encoding="utf-8")
    start = text.index("## Notifiers\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("kind", BUNDLED, ids=lambda kind: kind.name)
def test_alerts_md_documents_every_option_and_has_a_working_example(
    kind: type[Notifier],
) -> None:
    section = notifiers_section()
    start = section.index(f"### {kind.name}\n")
    end = section.find("\n### ", start + 1)
    part = section[start : end if end != -1 else len(section)]
    for option_field in attrs.fields(kind.Config):
        assert f"| `{option_field.name}` |" in part, f"{kind.name}: {option_field.name}"
    tables = [
        table
        for block in fenced(part, "toml")
        for table in tomllib.loads(block)["notifiers"].values()
    ]
    assert tables, f"no [notifiers.<id>] example for {kind.name}"
    for table in tables:
        assert table.pop("type") == kind.name
        build_config(kind.Config, table, file="docs/alerts.md", table="notifiers")


def test_alerts_md_shows_the_webhook_body_as_sent() -> None:
    [shown] = [json.loads(block) for block in fenced(notifiers_section(), "json")]
    body = notifiers.notification_body(notification(), sent_at=0)
    assert set(shown) == set(body)
    assert set(shown["alerts"][0]) == set(body["alerts"][0])
    assert shown["version"] == notifiers.WEBHOOK_BODY_VERSION
