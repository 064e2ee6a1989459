"""The bundled ``http`` plugin, against real HTTP and HTTPS servers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from services import TLSHTTPServer, free_port, self_signed_certificate

from homelab_core import ConfigError, ExecutionStatus, HealthState, PluginManager
from homelab_core.cli import cli
from homelab_core.options import REDACTED
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import run_plugin, run_plugin_async
from homelab_plugins import http
from homelab_plugins.http import Http

pytestmark = pytest.mark.anyio

#: The instance id and run timeout every run of the plugin here uses.
LOCAL: dict[str, Any] = {"instance_id": "h", "timeout": 10}


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The plugin is pure anyio (and httpx supports both), so it is checked on both."""
    return str(request.param)


#: How long /slow takes to answer; the timeout test gives the plugin less than this.
SLOW_SECONDS = 1.5
CERT_DAYS = 30


class Handler(BaseHTTPRequestHandler):
    """A few routes that each answer one way."""

    def do_GET(self) -> None:
        if self.path == "/":
            self._answer(200, b"<h1>Welcome to the homelab</h1>")
        elif self.path == "/unavailable":
            self._answer(503, b"maintenance")
        elif self.path == "/redirect":
            self._answer(302, b"", Location="/")
        elif self.path == "/loop":
            self._answer(302, b"", Location="/loop")
        elif self.path == "/example-host":  # a redirect, for requests naming example.org
            if self.headers.get("Host") == "example.org":
                self._answer(302, b"", Location="/")
            else:
                self._answer(400, b"")
        elif self.path == "/slow":
            time.sleep(SLOW_SECONDS)
            self._answer(200, b"finally")
        elif self.path == "/bearer":
            ok = self.headers.get("Authorization") == "Bearer s3cret"
            self._answer(200 if ok else 401, b"")
        elif self.path == "/basic":
            expected = "Basic " + base64.b64encode(b"admin:hunter2").decode()
            self._answer(200 if self.headers.get("Authorization") == expected else 401, b"")
        else:
            self._answer(404, b"not found")

    def do_HEAD(self) -> None:
        self._answer(200, b"")

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up early (the timeout test) are expected here


@contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Run :class:`Handler` on a free loopback port; yields the base URL."""
    server: ThreadingHTTPServer
    if tls is None:
        server = Server(("127.0.0.1", 0), Handler)
    else:
        server = TLSHTTPServer(("127.0.0.1", 0), Handler, tls)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def base_url() -> Iterator[str]:
    with serve() as url:
        yield url


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 valid for CERT_DAYS days, and its key."""
    return self_signed_certificate(tmp_path_factory.mktemp("tls"), CERT_DAYS)


@pytest.fixture
def https_url(certificate: tuple[Path, Path]) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with serve(context) as url:
        yield url


async def test_a_page_answering_200_is_up(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert {m.name for m in run.metrics} == {
        "http.up",
        "http.status_code",
        "http.response_time",
        "http.redirects",
    }
    assert run.value("http.up") == 1
    assert run.value("http.status_code") == 200
    assert run.value("http.redirects") == 0
    assert 0 < run.value("http.response_time") < 5
    assert run.metric("http.response_time").unit == "s"
    assert run.health.state is HealthState.OK
    assert run.health.message.startswith(f"{base_url}/ answered 200 in ")


async def test_a_keyword_on_the_page_is_reported_found(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/", keyword="Welcome", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.keyword_found") == 1
    assert run.value("http.up") == 1
    assert run.health.state is HealthState.OK


async def test_a_missing_keyword_makes_the_target_down(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/", keyword="Goodbye", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.keyword_found") == 0
    assert run.value("http.up") == 0
    assert run.value("http.status_code") == 200
    assert run.health.state is HealthState.FAILING
    assert run.health.message == f"{base_url}/ answered 200 but the body does not contain 'Goodbye'"


async def test_a_wrong_status_makes_the_target_down(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/unavailable", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 0
    assert run.value("http.status_code") == 503
    assert run.health.state is HealthState.FAILING
    assert run.health.message == f"{base_url}/unavailable answered 503, expected 200-399"


async def test_expected_status_makes_a_listed_code_up(base_url: str) -> None:
    run = await run_plugin_async(
        Http, url=base_url + "/unavailable", expected_status=[503], **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 1
    assert run.health.state is HealthState.OK


async def test_a_response_slower_than_the_timeout_is_down_and_says_it_timed_out(
    base_url: str,
) -> None:
    run = await run_plugin_async(Http, url=base_url + "/slow", request_timeout=0.3, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.execution.duration < SLOW_SECONDS  # it did not wait for the answer
    assert [(m.name, m.value) for m in run.metrics] == [("http.up", 0)]
    assert run.health.state is HealthState.FAILING
    assert run.health.message == f"{base_url}/slow did not answer within 0.3 s"


async def test_a_redirect_is_followed_and_counted(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/redirect", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.redirects") == 1
    assert run.value("http.status_code") == 200
    assert run.value("http.up") == 1
    assert run.metric("http.redirects").unit == "redirects"
    assert "answered 200 after 1 redirect in" in run.health.message


async def test_a_redirect_not_followed_reports_the_3xx_as_up(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/redirect", follow_redirects=False, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.status_code") == 302
    assert run.value("http.redirects") == 0
    assert run.value("http.up") == 1


async def test_a_redirect_loop_is_down_after_max_redirects(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/loop", max_redirects=3, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert [(m.name, m.value) for m in run.metrics] == [("http.up", 0)]
    assert run.health.state is HealthState.FAILING
    assert run.health.message == f"{base_url}/loop redirected more than 3 times"


async def test_a_refused_connection_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    run = await run_plugin_async(Http, url=url, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert [(m.name, m.value) for m in run.metrics] == [("http.up", 0)]
    assert run.health.state is HealthState.FAILING
    assert run.health.message == f"{url} refused the connection"


async def test_head_requests_work(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/", method="HEAD", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 1


async def test_a_bearer_token_is_sent(base_url: str) -> None:
    run = await run_plugin_async(Http, url=base_url + "/bearer", bearer_token="s3cret", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.status_code") == 200


async def test_basic_auth_is_sent(base_url: str) -> None:
    run = await run_plugin_async(
        Http, url=base_url + "/basic", username="admin", password="hunter2", **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.status_code") == 200


async def test_https_reports_the_days_until_the_certificate_expires(https_url: str) -> None:
    run = await run_plugin_async(Http, url=https_url + "/", verify_tls=False, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 1
    days = run.metric("http.tls_days_left")
    assert CERT_DAYS - 1 <= days.value <= CERT_DAYS
    assert days.unit == "days"
    assert run.health.state is HealthState.OK


async def test_a_self_signed_certificate_fails_verification_with_a_clear_message(
    https_url: str,
) -> None:
    run = await run_plugin_async(Http, url=https_url + "/", **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 0
    assert not run.has("http.status_code")
    assert run.health.state is HealthState.FAILING
    assert run.health.message.startswith(f"{https_url}/ failed TLS certificate verification: self")
    # The expiry is still read, so an untrusted or expired certificate shows it.
    assert CERT_DAYS - 1 <= run.value("http.tls_days_left") <= CERT_DAYS


async def test_ca_file_makes_a_private_certificate_trusted(
    https_url: str, certificate: tuple[Path, Path]
) -> None:
    run = await run_plugin_async(Http, url=https_url + "/", ca_file=str(certificate[0]), **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 1
    assert run.health.state is HealthState.OK


async def test_a_certificate_expiring_within_tls_warn_days_is_degraded(https_url: str) -> None:
    run = await run_plugin_async(
        Http, url=https_url + "/", verify_tls=False, tls_warn_days=60, **LOCAL
    )
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.up") == 1
    assert run.health.state is HealthState.DEGRADED
    assert "; its TLS certificate expires in " in run.health.message


async def test_an_unreadable_ca_file_fails_setup(tmp_path: Path) -> None:
    run = await run_plugin_async(
        Http, instance_id="h", timeout=5, url="https://127.0.0.1/", ca_file=str(tmp_path / "x")
    )
    assert run.status is ExecutionStatus.ERROR
    assert run.error is not None and run.error.startswith("setup failed")
    assert run.metrics == []


@pytest.mark.parametrize("url", ["ftp://nas/", "127.0.0.1:8080", "http:///path", "http://h:99999/"])
def test_a_url_that_is_not_http_or_https_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="'url' must be an http:// or https:// URL") as caught:
        run_plugin(Http, url=url)
    assert caught.value.field == "url"


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ConfigError, match="method"):
        run_plugin(Http, url="http://nas/", method="FETCH")


def test_a_keyword_with_head_is_refused() -> None:
    with pytest.raises(ConfigError, match="'keyword' cannot be checked with method HEAD"):
        run_plugin(Http, url="http://nas/", method="HEAD", keyword="x")


def test_expected_status_outside_100_to_599_is_refused() -> None:
    with pytest.raises(ConfigError, match="'expected_status' must hold HTTP status codes"):
        run_plugin(Http, url="http://nas/", expected_status=[200, 700])


def homelab_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **sets: str) -> dict[str, Any]:
    """``homelab run http --once --set key=value ...`` (options as text, as a user gives
    them) in an empty directory; its JSON output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOMELAB_CONFIG", raising=False)
    manager = PluginManager(load_entry_points=False)
    manager.register(http, name="http")
    arguments = [part for key, value in sets.items() for part in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(
        cli, ["run", "http", "--once", *arguments], obj=manager, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def test_options_given_as_text_are_parsed(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = homelab_run(
        monkeypatch,
        tmp_path,
        url=f"{base_url}/example-host",
        expected_status="200,204",
        headers='{"Host": "example.org"}',
        follow_redirects="false",
    )
    config = output["config"]
    assert config["expected_status"] == [200, 204]
    assert config["headers"] == {"Host": REDACTED}  # shown redacted: secret as a whole
    assert config["follow_redirects"] is False
    # What was sent shows the parsed values: the Host header reached the server (else
    # 400), its redirect was not followed, and 302 is outside the expected 200 and 204.
    found = {m["name"]: m["value"] for m in output["metrics"]}
    assert (found["http.status_code"], found["http.up"]) == (302, 0)
    assert output["health"]["message"] == f"{base_url}/example-host answered 302, expected 200, 204"


def test_secrets_are_redacted(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    basic = homelab_run(
        monkeypatch, tmp_path, url=f"{base_url}/basic", username="admin", password="hunter2"
    )
    assert basic["config"]["password"] == REDACTED
    assert "hunter2" not in json.dumps(basic)
    token = homelab_run(monkeypatch, tmp_path, url=f"{base_url}/bearer", bearer_token="s3cret")
    assert token["config"]["bearer_token"] == REDACTED
    assert "s3cret" not in json.dumps(token)


def test_headers_are_secret_as_a_whole(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = homelab_run(monkeypatch, tmp_path, url=f"{base_url}/", headers='{"X-Api-Key": "k3y"}')
    assert output["config"]["headers"] == {"X-Api-Key": REDACTED}
    headers = Http.config_schema()["properties"]["headers"]
    assert headers["writeOnly"] is True and headers["x-secret"] is True


def test_url_credentials_are_split_from_the_url() -> None:
    assert http.url_credentials("https://nas:8443/x?y=1") == ("https://nas:8443/x?y=1", None)
    assert http.url_credentials("http://bob:p%40ss@nas:80/x") == (
        "http://nas:80/x",
        ("bob", "p@ss"),
    )
    assert http.url_credentials("http://token@nas/") == ("http://nas/", ("token", ""))


async def test_credentials_in_the_url_are_sent_as_basic_auth(base_url: str) -> None:
    url = base_url.replace("http://", "http://admin:hunter2@") + "/basic"
    run = await run_plugin_async(Http, url=url, **LOCAL)
    run.assert_ok()
    assert run.health is not None
    assert run.value("http.status_code") == 200 and run.health.state == "ok"
    assert "hunter2" not in run.health.message
    assert run.health.message.startswith(f"http://admin:{REDACTED}@127.0.0.1:")


def test_the_type_is_valid_and_described() -> None:
    assert validate_plugin_type(Http) == []
    schema = Http.config_schema()
    assert schema["required"] == ["url"]
    assert schema["properties"]["password"]["x-secret"] is True
    assert schema["properties"]["expected_status"]["default"] is None


def test_homelab_run_checks_a_url(
    base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = homelab_run(monkeypatch, tmp_path, url=f"{base_url}/", keyword="homelab")
    assert output["health"]["state"] == "ok"
    found = {m["name"]: m["value"] for m in output["metrics"]}
    assert found["http.up"] == 1
    assert found["http.keyword_found"] == 1
