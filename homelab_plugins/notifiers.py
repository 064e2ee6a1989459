"""The bundled notifier types: ``webhook``, ``ntfy``, ``email``, ``apprise`` and ``log``.

Each is configured by a ``[notifiers.<id>]`` table (see docs/alerts.md, "Notifiers"). A
``send`` tries once and raises :class:`~homelab_core.NotifierError` with a sentence saying
what went wrong (the receiver's status and a short excerpt of its answer, never a secret);
the alert service bounds the call by the notifier's ``timeout`` and retries with back-off.

The libraries they use (httpx, aiosmtplib, apprise) are imported on the first ``send``, so
that listing the notifier types stays cheap and ``apprise`` stays optional.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
import attrs

from homelab_core import AlertNotice, Notification, Notifier, NotifierError, hookimpl, option
from homelab_core.options import secret_values
from homelab_core.redact import Redactor

from .http import http_url, url_credentials

if TYPE_CHECKING:
    import email.message

    import httpx

#: The version of the webhook's JSON body (``"version"``); raised when a field changes
#: meaning or goes away, not when one is added.
WEBHOOK_BODY_VERSION = 1
#: Longest excerpt of a receiver's answer quoted in an error.
EXCERPT_CHARS = 200
#: Most bytes of an ntfy message; ntfy turns longer ones into attachments (or refuses them).
NTFY_MAX_MESSAGE_BYTES = 4000

#: ntfy priorities (1 min .. 5 max) by severity; other severities get 3 (default).
NTFY_PRIORITY = {"critical": 5, "warning": 4, "info": 3}
#: The ntfy tag (an emoji shortcode) put first, by status and severity.
NTFY_TAG = {"critical": "rotating_light", "warning": "warning", "info": "information_source"}
NTFY_RESOLVED_TAG = "white_check_mark"
#: Log levels of the ``log`` notifier by severity; resolved messages are INFO.
LOG_LEVEL = {"critical": logging.CRITICAL, "warning": logging.WARNING, "info": logging.INFO}


# -- shared pieces -------------------------------------------------------------------------


def _not_empty(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value:
        raise ValueError(f"'{attribute.name}' must not be empty")


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what an error may name (paths hold tokens)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, "", "", ""))


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _tls(verify_tls: bool, ca_file: str | None) -> ssl.SSLContext | bool:
    if not verify_tls:
        return False
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=ca_file)  # raises if unreadable


def _reason(exc: BaseException) -> str:
    """Why a request or connection failed, from the innermost useful exception."""
    current: BaseException | None = exc
    seen: list[BaseException] = []
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {current.verify_message or current}"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        current = current.__cause__ or current.__context__
    return str(exc) or type(exc).__name__


def _number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those are sent as null."""
    return value if value is None or math.isfinite(value) else None


def alert_body(alert: AlertNotice) -> dict[str, Any]:
    """One alert of the webhook body (every :class:`AlertNotice` field)."""
    return {
        "rule": alert.rule,
        "fingerprint": alert.fingerprint,
        "status": alert.status,
        "severity": alert.severity,
        "labels": dict(alert.labels),
        "summary": alert.summary,
        "description": alert.description,
        "value": _number(alert.value),
        "instance_id": alert.instance_id,
        "started_at": alert.started_at,
        "resolved_at": alert.resolved_at,
    }


def notification_body(notification: Notification, *, sent_at: int) -> dict[str, Any]:
    """The webhook's JSON body for ``notification`` (docs/alerts.md shows it)."""
    return {
        "version": WEBHOOK_BODY_VERSION,
        "notifier": notification.notifier,
        "group": notification.group,
        "status": notification.status,
        "severity": notification.severity,
        "title": notification.title,
        "text": notification.text,
        "test": notification.test,
        "sent_at": sent_at,
        "alerts": [alert_body(alert) for alert in notification.alerts],
    }


def sign(secret: str, body: bytes) -> str:
    """The ``X-Homelab-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class _HttpNotifier(Notifier[Any]):
    """What the HTTP notifiers share: one client, created on first use, and errors."""

    _client: httpx.AsyncClient | None = None

    def __init__(self, config: Any, *, notifier_id: str) -> None:
        super().__init__(config, notifier_id=notifier_id)
        self._redact = Redactor(secret_values(config))

    def _error(self, message: str) -> NotifierError:
        return NotifierError(self._redact(message))

    def _make_client(self, verify: ssl.SSLContext | bool, **kwargs: Any) -> httpx.AsyncClient:
        import httpx

        from homelab_core import __version__

        return httpx.AsyncClient(
            verify=verify,
            # The alert service bounds every send by the notifier's timeout.
            timeout=httpx.Timeout(None),
            headers={"User-Agent": f"homelab-core/{__version__}"},
            # Where it sends is what the config says, whatever proxy the environment names.
            trust_env=False,
            **kwargs,
        )

    async def _post(self, url: str, where: str, **kwargs: Any) -> httpx.Response:
        """POST to ``url``; raise :class:`NotifierError` unless the answer is a 2xx."""
        import httpx

        assert self._client is not None
        try:
            response = await self._client.post(url, **kwargs)
        except httpx.HTTPError as exc:
            raise self._error(f"cannot send to {where}: {_reason(exc)}") from None
        if not 200 <= response.status_code < 300:
            raise self._error(
                f"{where} answered {response.status_code} {response.reason_phrase}"
                f"{self._answer(response)}"
            )
        return response

    def _answer(self, response: httpx.Response) -> str:
        text = excerpt(response.text) if response.content else ""
        return f": {text}" if text else ""

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# -- webhook -----------------------------------------------------------------------------


@attrs.define
class WebhookConfig:
    """Options of a ``webhook`` notifier."""

    url: str = option(
        description="The http:// or https:// URL to POST the JSON body to. User information"
        " in it (https://user:password@host/...) is sent as basic authentication. Errors name"
        " only its scheme, host and port.",
        validator=http_url("url"),
    )
    headers: dict[str, str] = option(
        factory=dict,
        description='Extra request headers, such as {Authorization = "Bearer ..."}. Secret:'
        " their values are never shown.",
        secret=True,
    )
    hmac_secret: str | None = option(
        None,
        description="When set, each request carries 'X-Homelab-Signature: sha256=<hex>', the"
        " HMAC-SHA256 of the exact body with this key, and 'X-Homelab-Timestamp'.",
        secret=True,
    )
    verify_tls: bool = option(True, description="Check the server certificate.")
    ca_file: str | None = option(
        None, description="PEM file of CA certificates to trust instead of the bundled ones."
    )

    def __attrs_post_init__(self) -> None:
        if self.hmac_secret == "":
            raise ValueError("'hmac_secret' must not be empty; leave it unset to not sign")


class Webhook(_HttpNotifier):
    """POSTs every notification as a JSON document (docs/alerts.md describes its fields)."""

    name = "webhook"
    title = "Webhook"
    description = "POSTs each notification as JSON to a URL, optionally signed with HMAC."
    version = "1.0.0"
    Config = WebhookConfig
    config: WebhookConfig

    def __init__(self, config: WebhookConfig, *, notifier_id: str) -> None:
        super().__init__(config, notifier_id=notifier_id)
        self._target, self._auth = url_credentials(config.url)
        self._where = f"webhook {origin(config.url)}"

    async def send(self, notification: Notification) -> None:
        """POST the notification; a 2xx answer is success."""
        import httpx

        config = self.config
        if self._client is None:
            auth = httpx.BasicAuth(*self._auth) if self._auth else None
            verify = _tls(config.verify_tls, config.ca_file)
            self._client = self._make_client(verify, auth=auth)
        sent_at = int(time.time())
        body = json.dumps(
            notification_body(notification, sent_at=sent_at),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        headers = {**config.headers, "Content-Type": "application/json"}
        if config.hmac_secret is not None:
            headers["X-Homelab-Signature"] = sign(config.hmac_secret, body)
            headers["X-Homelab-Timestamp"] = str(sent_at)
        await self._post(self._target, self._where, content=body, headers=headers)


# -- ntfy ----------------------------------------------------------------------------------


def _topic(_: Any, __: Any, value: str) -> None:
    if not value or "/" in value or any(c.isspace() for c in value):
        raise ValueError(f"'topic' must be a topic name without '/' or spaces, got {value!r}")


@attrs.define
class NtfyConfig:
    """Options of an ``ntfy`` notifier."""

    topic: str = option(
        description="The topic to publish to. On a public server the topic name is the only"
        " protection: pick one that cannot be guessed.",
        validator=_topic,
    )
    server: str = option(
        "https://ntfy.sh",
        description="The ntfy server's base URL (a path is kept: https://host/ntfy).",
        validator=http_url("server"),
    )
    token: str | None = option(
        None, description="Access token, sent as 'Authorization: Bearer <token>'.", secret=True
    )
    username: str | None = option(None, description="User name for basic authentication.")
    password: str | None = option(
        None, description="Password for basic authentication.", secret=True
    )
    priority: int | None = option(
        None,
        description="Message priority 1-5 for every message; unset: from the severity"
        " (critical 5, warning 4, info 3; resolved messages at most 3).",
        minimum=1,
        maximum=5,
    )
    tags: list[str] = option(
        factory=list,
        description="Tags (or emoji shortcodes) added after the one for the status.",
    )
    click: str | None = option(
        None, description="URL to open when the notification is tapped (a dashboard)."
    )
    verify_tls: bool = option(True, description="Check the server certificate.")
    ca_file: str | None = option(
        None, description="PEM file of CA certificates to trust instead of the bundled ones."
    )

    def __attrs_post_init__(self) -> None:
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs a 'username'")
        if self.token is not None and self.username is not None:
            raise ValueError("'token' and 'username' cannot both be set")


def _cut_utf8(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"


def ntfy_message(config: NtfyConfig, notification: Notification) -> dict[str, Any]:
    """The JSON object published for ``notification`` (ntfy's "publish as JSON")."""
    severity = notification.severity
    priority = config.priority or NTFY_PRIORITY.get(severity, 3)
    if notification.status == "resolved" and config.priority is None:
        priority = min(priority, 3)
    first = NTFY_RESOLVED_TAG if notification.status == "resolved" else NTFY_TAG.get(severity)
    tags = [first] if first else []
    tags += [tag for tag in config.tags if tag not in tags]
    message: dict[str, Any] = {
        "topic": config.topic,
        "title": _cut_utf8(notification.title, 250),
        "message": _cut_utf8(notification.text or notification.title, NTFY_MAX_MESSAGE_BYTES),
        "priority": priority,
        "tags": tags,
    }
    if config.click is not None:
        message["click"] = config.click
    return message


class Ntfy(_HttpNotifier):
    """Publishes to an ntfy topic with ntfy's JSON publish API (a POST to the server root)."""

    name = "ntfy"
    title = "ntfy"
    description = "Publishes each notification to an ntfy topic (ntfy.sh or your own server)."
    version = "1.0.0"
    Config = NtfyConfig
    config: NtfyConfig

    def __init__(self, config: NtfyConfig, *, notifier_id: str) -> None:
        super().__init__(config, notifier_id=notifier_id)
        server, self._auth = url_credentials(config.server)
        # JSON messages go to the root URL, not to the topic's URL.
        self._root = server.rstrip("/") + "/"
        self._where = f"ntfy server {origin(config.server)}"

    async def send(self, notification: Notification) -> None:
        """Publish the notification; ntfy answers 200 with the message it stored."""
        import httpx

        config = self.config
        if self._client is None:
            headers: dict[str, str] = {}
            auth: httpx.Auth | None = None
            if config.token is not None:
                headers["Authorization"] = f"Bearer {config.token}"
            elif config.username is not None:
                auth = httpx.BasicAuth(config.username, config.password or "")
            elif self._auth is not None:
                auth = httpx.BasicAuth(*self._auth)
            verify = _tls(config.verify_tls, config.ca_file)
            self._client = self._make_client(verify, auth=auth)
            self._client.headers.update(headers)
        await self._post(self._root, self._where, json=ntfy_message(config, notification))

    def _answer(self, response: httpx.Response) -> str:
        # ntfy's errors are JSON: {"code": 40101, "http": 401, "error": "unauthorized", ...}
        try:
            data = response.json()
        except ValueError:
            return super()._answer(response)
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            return f": {excerpt(data['error'])}"
        return super()._answer(response)


# -- email ---------------------------------------------------------------------------------

Security = Literal["starttls", "tls", "none"]
#: The port used when ``port`` is not set, by ``security``.
SMTP_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}


def _address(_: Any, attribute: attrs.Attribute[Any], value: str | list[str]) -> None:
    from email.utils import parseaddr

    addresses = [value] if isinstance(value, str) else value
    if not addresses:
        raise ValueError(f"'{attribute.name}' must name at least one address")
    for address in addresses:
        found = parseaddr(address)[1]
        if "@" not in found or any(c.isspace() for c in found):
            raise ValueError(f"'{attribute.name}' must hold e-mail addresses, got {address!r}")


@attrs.define
class EmailConfig:
    """Options of an ``email`` notifier."""

    host: str = option(description="The SMTP server's host name or address.")
    from_address: str = option(
        description="The sender address (From:), such as 'Homelab <homelab@example.org>'.",
        validator=_address,
    )
    to: list[str] = option(description="The recipient addresses.", validator=_address)
    port: int | None = option(
        None,
        description="The SMTP port; unset: 587 for starttls, 465 for tls, 25 for none.",
        minimum=1,
        maximum=65535,
    )
    security: Security = option(
        "starttls",
        description="'starttls': plain connection upgraded with STARTTLS (required);"
        " 'tls': TLS from the start (SMTPS); 'none': no encryption.",
    )
    username: str | None = option(None, description="User name to log in with (AUTH).")
    password: str | None = option(None, description="Password to log in with.", secret=True)
    verify_tls: bool = option(
        True, description="Check the server certificate (chain and host name)."
    )
    ca_file: str | None = option(
        None, description="PEM file of CA certificates to trust instead of the bundled ones."
    )

    def __attrs_post_init__(self) -> None:
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs a 'username'")


class Email(Notifier[EmailConfig]):
    """Sends each notification as a plain-text e-mail over SMTP (aiosmtplib)."""

    name = "email"
    title = "E-mail (SMTP)"
    description = "Sends each notification as a plain-text e-mail through an SMTP server."
    version = "1.0.0"

    def __init__(self, config: EmailConfig, *, notifier_id: str) -> None:
        super().__init__(config, notifier_id=notifier_id)
        self._redact = Redactor(secret_values(config))
        self.port = config.port or SMTP_PORTS[config.security]
        self._where = f"SMTP server {config.host}:{self.port}"

    def message(self, notification: Notification) -> email.message.EmailMessage:
        """The e-mail for ``notification``: subject the title, body the text."""
        import email.message
        import email.utils

        config = self.config
        message = email.message.EmailMessage()
        message["Subject"] = notification.title
        message["From"] = config.from_address
        message["To"] = ", ".join(config.to)
        message["Date"] = email.utils.formatdate(localtime=True)
        domain = config.from_address.rpartition("@")[2].strip(" >") or None
        message["Message-ID"] = email.utils.make_msgid(domain=domain)
        message["X-Homelab-Status"] = notification.status
        message["X-Homelab-Severity"] = notification.severity
        message.set_content(notification.text or notification.title)
        return message

    async def send(self, notification: Notification) -> None:
        """Connect, secure the connection, log in if configured, and send the mail."""
        import aiosmtplib

        config = self.config
        secure = config.security != "none"
        try:
            await aiosmtplib.send(
                self.message(notification),
                hostname=config.host,
                port=self.port,
                username=config.username,
                password=config.password,
                use_tls=config.security == "tls",
                start_tls=config.security == "starttls",
                validate_certs=secure and config.verify_tls,
                cert_bundle=config.ca_file if secure and config.verify_tls else None,
                # The alert service bounds every send by the notifier's timeout.
                timeout=None,
            )
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise self._error(
                f"{self._where} refused the login of {config.username!r}:"
                f" {exc.code} {excerpt(exc.message)}"
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(
                f"{error.recipient} ({error.code} {excerpt(error.message, 80)})"
                for error in exc.recipients
            )
            raise self._error(f"{self._where} refused the recipients: {refused}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise self._error(f"{self._where} answered {exc.code} {excerpt(exc.message)}") from None
        except aiosmtplib.SMTPConnectError as exc:
            raise self._error(f"cannot connect to {self._where}: {_reason(exc)}") from None
        except aiosmtplib.SMTPException as exc:
            raise self._error(f"cannot send through {self._where}: {_reason(exc)}") from None
        except (OSError, ssl.SSLError) as exc:
            raise self._error(f"cannot connect to {self._where}: {_reason(exc)}") from None

    def _error(self, message: str) -> NotifierError:
        return NotifierError(self._redact(message))


# -- apprise -------------------------------------------------------------------------------

#: How to get Apprise when it is missing.
APPRISE_INSTALL = "pip install 'homelab-core[apprise]'"


@attrs.define
class AppriseConfig:
    """Options of an ``apprise`` notifier."""

    urls: list[str] = option(
        description="Apprise URLs, one per service (discord://..., tgram://..., gotify://...,"
        " json://...). Secret: they hold tokens.",
        secret=True,
        validator=_not_empty,
    )


def _scheme(url: str) -> str:
    return url.partition("://")[0] if "://" in url else "?"


class Apprise(Notifier[AppriseConfig]):
    """Sends through Apprise, one notifier for the services Apprise knows."""

    name = "apprise"
    title = "Apprise"
    description = (
        "Sends each notification through Apprise to any of the services it knows (Discord,"
        " Slack, Telegram, Gotify, Pushover, ...); needs the 'apprise' extra."
    )
    version = "1.0.0"

    _targets: list[Any] | None = None

    def _load(self) -> list[Any]:
        """One Apprise object per URL, so that an error can say which URL failed."""
        try:
            import apprise
        except ImportError:
            raise NotifierError(
                f"the apprise notifier needs the apprise package: {APPRISE_INSTALL}"
            ) from None
        targets = []
        for index, url in enumerate(self.config.urls, 1):
            target = apprise.Apprise()
            if not target.add(url):
                raise NotifierError(
                    f"Apprise does not understand URL {index} (scheme {_scheme(url)!r}); see"
                    " the Apprise documentation for that service's URL form"
                )
            targets.append(target)
        return targets

    async def send(self, notification: Notification) -> None:
        """Notify every URL at once; raise naming each URL Apprise could not deliver to."""
        if self._targets is None:
            self._targets = self._load()
        targets = self._targets
        notify_type = _apprise_type(notification)
        body = notification.text or notification.title
        results: list[bool] = [False] * len(targets)
        asyncio = _on_asyncio()

        async def deliver(index: int) -> None:
            target = targets[index]
            kwargs = {"body": body, "title": notification.title, "notify_type": notify_type}
            if asyncio:
                results[index] = bool(await target.async_notify(**kwargs))
            else:  # Apprise's async API needs asyncio; elsewhere its blocking one, in a thread
                outcome = await anyio.to_thread.run_sync(
                    lambda: target.notify(**kwargs), abandon_on_cancel=True
                )
                results[index] = bool(outcome)

        async with anyio.create_task_group() as tasks:
            for index in range(len(targets)):
                tasks.start_soon(deliver, index)
        failed = [
            f"URL {index} ({_scheme(url)}://)"
            for index, (url, ok) in enumerate(zip(self.config.urls, results, strict=True), 1)
            if not ok
        ]
        if failed:
            raise NotifierError(
                f"Apprise could not deliver to {', '.join(failed)} of {len(targets)};"
                " the reason is in the log of the 'apprise' logger"
            )


def _on_asyncio() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio
        return False
    return True


def _apprise_type(notification: Notification) -> Any:
    """Apprise's ``NotifyType`` (its colour and icon) for the status and severity."""
    import apprise

    if notification.status == "resolved":
        return apprise.NotifyType.SUCCESS
    if notification.severity == "critical":
        return apprise.NotifyType.FAILURE
    if notification.severity == "warning":
        return apprise.NotifyType.WARNING
    return apprise.NotifyType.INFO


# -- log -----------------------------------------------------------------------------------


@attrs.define
class LogConfig:
    """Options of a ``log`` notifier."""

    format: Literal["text", "json"] = option(
        "text",
        description="'text': the title, then the text, on one record; 'json': the webhook's"
        " JSON body on one line (for log shippers).",
    )


class Log(Notifier[LogConfig]):
    """Writes each notification to the ``homelab.notify.<id>`` logger."""

    name = "log"
    title = "Log"
    description = (
        "Writes each notification to the 'homelab.notify.<id>' logger, at a level from the"
        " severity."
    )
    version = "1.0.0"

    def __init__(self, config: LogConfig, *, notifier_id: str) -> None:
        super().__init__(config, notifier_id=notifier_id)
        self.logger = logging.getLogger(f"homelab.notify.{notifier_id}")

    async def send(self, notification: Notification) -> None:
        """Log the notification: CRITICAL, WARNING or INFO by severity; INFO when resolved."""
        if notification.status == "resolved":
            level = logging.INFO
        else:
            level = LOG_LEVEL.get(notification.severity, logging.WARNING)
        if self.config.format == "json":
            body = notification_body(notification, sent_at=int(time.time()))
            self.logger.log(level, "%s", json.dumps(body, ensure_ascii=False))
        else:
            self.logger.log(level, "%s\n%s", notification.title, notification.text)


@hookimpl
def register_notifiers(register: Callable[[type[Notifier]], None]) -> None:
    """Contribute the bundled notifier types."""
    for notifier_type in (Webhook, Ntfy, Email, Apprise, Log):
        register(notifier_type)
