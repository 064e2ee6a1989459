"""The one redaction of the core: credentials in URLs and the values of secret options."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
from services import free_port

from homelab_core import Plugin, StoreError, option
from homelab_core.options import build_config, config_schema, config_to_dict, secret_values
from homelab_core.redact import (
    MIN_SECRET_LENGTH,
    REDACTED,
    RedactingFilter,
    Redactor,
    install_filter,
    redact_urls,
)
from homelab_core.runner import run_once
from homelab_core.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- credentials in URLs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://bob:secret@host/", f"http://bob:{REDACTED}@host/"),
        ("https://bob:secret@host:8443/a?b=c#d", f"https://bob:{REDACTED}@host:8443/a?b=c#d"),
        ("postgres://app:p%40ss@db:5432/homelab", f"postgres://app:{REDACTED}@db:5432/homelab"),
        # A user name alone may be a token (https://TOKEN@github.com/...): it goes too.
        ("https://ghp_abc123@github.com/me/repo", f"https://{REDACTED}@github.com/me/repo"),
        # An unescaped "@" in a password: the host is after the last one, as urlsplit says.
        ("http://bob:p@ss@host/", f"http://bob:{REDACTED}@host/"),
        ("HTTP://Bob:Secret@HOST", f"HTTP://Bob:{REDACTED}@HOST"),
        ("git+ssh://deploy:key@git.lan/x", f"git+ssh://deploy:{REDACTED}@git.lan/x"),
        ("redis://:secret@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        (
            "request to 'http://bob:secret@127.0.0.1:8080/a' failed: refused",
            f"request to 'http://bob:{REDACTED}@127.0.0.1:8080/a' failed: refused",
        ),
        (
            '{"url": "http://a:one@h1/", "mirror": "https://b:two@h2"}',
            f'{{"url": "http://a:{REDACTED}@h1/", "mirror": "https://b:{REDACTED}@h2"}}',
        ),
        ("(http://bob:secret@host)", f"(http://bob:{REDACTED}@host)"),
        ("line one\nhttp://bob:secret@host\n", f"line one\nhttp://bob:{REDACTED}@host\n"),
    ],
)
def test_credentials_in_urls_are_redacted(text: str, expected: str) -> None:
    assert redact_urls(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain words, nothing to hide",
        "bob@example.org wrote",
        "mailto:bob@example.org",
        "http://host:8080/path",
        "http://host/path?to=a@b#c@d",  # an "@" after the host belongs to the path or query
        "http://host/ mail bob@example.org",
        "http://@host/",  # an empty user information hides nothing
        "http://bob:@host/",  # nor does an empty password
        "user:pass@host:5432 (no scheme: not a URL)",
        "://nobody:x@host",
        "caf\udce9 http://host/",
    ],
)
def test_texts_without_credentials_are_untouched(text: str) -> None:
    assert redact_urls(text) == text


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact_urls("http://bob:secret@host/ and https://token@host/")
    assert redact_urls(once) == once
    assert once == f"http://bob:{REDACTED}@host/ and https://{REDACTED}@host/"


# -- the values of secret options --------------------------------------------------------------


def test_a_redactor_removes_literal_secrets_and_url_credentials() -> None:
    redact = Redactor(["hunter2-long", "Bearer abc-token"])
    text = "login hunter2-long failed; sent Bearer abc-token to http://u:pw@h/"
    assert redact(text) == f"login {REDACTED} failed; sent {REDACTED} to http://u:{REDACTED}@h/"


def test_a_redactor_prefers_the_longest_secret() -> None:
    redact = Redactor(["token", "token-and-more"])
    assert redact("x token-and-more y token z") == f"x {REDACTED} y {REDACTED} z"


def test_a_redactor_leaves_values_too_short_to_be_secrets() -> None:
    short = "x" * (MIN_SECRET_LENGTH - 1)
    redact = Redactor([short, "", "1"])
    assert redact(f"a {short} 1 b") == f"a {short} 1 b"


def test_a_redactor_without_secrets_still_redacts_urls() -> None:
    assert Redactor()("see http://u:pw@h/") == f"see http://u:{REDACTED}@h/"


@attrs.define
class SecretConfig:
    url: str = option("http://nas/", description="A URL.")
    token: str = option("", secret=True, description="A token.")
    headers: dict[str, str] = option(factory=dict, secret=True, description="Headers.")
    keys: list[str] = option(factory=list, secret=True, description="Keys.")
    pin: int | None = option(None, secret=True, description="A PIN.")
    plain: dict[str, str] = option(factory=dict, description="Not secret.")


def test_secret_values_are_every_value_of_a_secret_option_and_url_passwords() -> None:
    config = build_config(
        SecretConfig,
        {
            "url": "http://bob:url-password@nas/",
            "token": "tok-123456",
            "headers": {"X-Api-Key": "key-abcdef", "Accept": "text/plain"},
            "keys": ["k1-aaaa", "k2-bbbb"],
            "pin": 123456,
            "plain": {"mirror": "https://ann:mirror-pw@m/", "x": "not-secret"},
        },
    )
    assert set(secret_values(config)) == {
        "tok-123456",
        "key-abcdef",
        "text/plain",
        "k1-aaaa",
        "k2-bbbb",
        "123456",
        "url-password",
        "mirror-pw",
    }


def test_config_output_masks_each_value_of_a_secret_mapping_and_url_passwords() -> None:
    config = build_config(
        SecretConfig,
        {
            "url": "http://bob:url-password@nas/",
            "headers": {"X-Api-Key": "key-abcdef"},
            "keys": ["k1-aaaa"],
            "pin": 1234,
            "plain": {"mirror": "https://ann:mirror-pw@m/"},
        },
    )
    assert config_to_dict(config) == {
        "url": f"http://bob:{REDACTED}@nas/",
        "token": "",
        "headers": {"X-Api-Key": REDACTED},
        "keys": [REDACTED],
        "pin": REDACTED,
        "plain": {"mirror": f"https://ann:{REDACTED}@m/"},
    }
    empty = config_to_dict(build_config(SecretConfig, {}))
    assert empty["headers"] == {} and empty["keys"] == [] and empty["pin"] is None
    raw = config_to_dict(config, redact=False)
    assert raw["url"] == "http://bob:url-password@nas/"
    assert raw["headers"] == {"X-Api-Key": "key-abcdef"}


def test_the_schema_marks_secret_options_write_only_and_password_formatted() -> None:
    properties = config_schema(SecretConfig)["properties"]
    assert properties["token"] == {**properties["token"], "writeOnly": True, "x-secret": True}
    assert properties["token"]["format"] == "password"
    headers = properties["headers"]
    assert headers["writeOnly"] is True and headers["x-secret"] is True
    assert headers["additionalProperties"] == {"type": "string", "format": "password"}
    assert properties["keys"]["items"] == {"type": "string", "format": "password"}
    assert "writeOnly" not in properties["plain"] and "format" not in properties["url"]


def test_a_config_error_does_not_echo_url_credentials_or_secret_values() -> None:
    def no_spaces(_: Any, __: Any, value: str) -> None:
        if " " in value:
            raise ValueError(f"'url' must not contain spaces, got {value!r}")

    @attrs.define
    class Checked:
        url: str = option(description="A URL.", validator=no_spaces)

    with pytest.raises(Exception, match="must not contain spaces") as caught:
        build_config(Checked, {"url": "http://bob:secret-pw@nas/ x"})
    assert "secret-pw" not in str(caught.value)
    assert f"http://bob:{REDACTED}@nas/" in str(caught.value)
    with pytest.raises(Exception, match="expected") as wrong:
        build_config(Checked, {"url": ["http://bob:secret-pw@nas/"]})
    assert "secret-pw" not in str(wrong.value)


# -- a plugin's own texts ----------------------------------------------------------------------


class Confesses(Plugin[SecretConfig]):
    """Says its secrets in an exception, in a log line and in a failed teardown."""

    name = "confesses"

    async def collect(self) -> list[Any]:
        self.log.warning("using %s and %s", self.config.token, self.config.url)
        raise RuntimeError(f"{self.config.headers} {self.config.token} {self.config.url}")

    async def teardown(self) -> None:
        raise RuntimeError(f"teardown {self.config.token}")


async def test_a_plugins_exception_log_and_teardown_are_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    config = build_config(
        SecretConfig,
        {"url": "http://bob:url-password@nas/", "token": "tok-123456", "headers": {"K": "v-12345"}},
    )
    execution, _, _ = await run_once(
        Confesses(config, instance_id="confesses"), instance_id="confesses", timeout=5
    )
    error = execution.error or ""
    assert error.startswith("RuntimeError: ")
    for secret in ("tok-123456", "v-12345", "url-password"):
        assert secret not in error
        assert secret not in caplog.text
    expected = f"RuntimeError: {{'K': '{REDACTED}'}} {REDACTED} http://bob:{REDACTED}@nas/"
    assert error == expected
    assert f"using {REDACTED} and http://bob:{REDACTED}@nas/" in caplog.text
    assert f"teardown {REDACTED}" in caplog.text


async def test_the_store_does_not_show_the_password_of_its_url() -> None:
    url = f"postgres://app:db-password-1@127.0.0.1:{free_port()}/homelab"
    with pytest.raises(StoreError) as caught:
        await Store(url).open()
    message = str(caught.value)
    assert message.startswith(f"cannot open the store at postgres://app:{REDACTED}@127.0.0.1:")
    assert "db-password-1" not in message


def test_the_log_filter_redacts_messages_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("homelab.plugin.filter-test")
    install_filter(logger, Redactor(["filter-secret"]))
    install_filter(logger, Redactor(["filter-secret-2"]))  # replaces, never piles up
    assert len([f for f in logger.filters if isinstance(f, RedactingFilter)]) == 1
    try:
        raise RuntimeError("boom with filter-secret-2 and http://u:pw@h/")
    except RuntimeError:
        logger.exception("failed: %s", "filter-secret-2")
    assert "filter-secret-2" not in caplog.text and "pw@" not in caplog.text
    assert f"RuntimeError: boom with {REDACTED} and http://u:{REDACTED}@h/" in caplog.text
    assert f"failed: {REDACTED}" in caplog.text


def test_the_log_filter_leaves_a_bad_format_to_the_handler() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%d", ("text",), None)
    assert RedactingFilter(Redactor(["secret"])).filter(record) is True
    assert (record.msg, record.args) == ("%d", ("text",))
