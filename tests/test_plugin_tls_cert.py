"""The bundled ``tls_cert`` plugin, against TLS servers on 127.0.0.1 with test certificates.

Certificates are made with the ``openssl`` command line tool: a test CA, leaf certificates it
signs with chosen validity dates (``openssl ca`` accepts dates in the past), and a
self-signed one.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from services import free_port, unavailable

from homelab_core import ExecutionStatus, HealthReport, PluginManager
from homelab_core.plugin import validate_plugin_type
from homelab_core.testing import PluginRun, run_plugin_async
from homelab_plugins import tls_cert
from homelab_plugins.tls_cert import TlsCert, read_certificate

pytestmark = pytest.mark.anyio

CA_CONFIG = """\
[ ca ]
default_ca = test_ca
[ test_ca ]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = any_name
copy_extensions = copy
unique_subject = no
[ any_name ]
organizationName = optional
commonName = supplied
"""
SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1"


class Pki:
    """A test CA in a directory, issuing certificates with the openssl CLI."""

    def __init__(self, root: Path) -> None:
        if not shutil.which("openssl"):
            unavailable("the openssl command line tool is not installed")
        self.root = root
        (root / "index.txt").write_text("")
        (root / "serial").write_text("1000\n")
        (root / "ca.cnf").write_text(CA_CONFIG.format(dir=root))
        self.ca_cert, self.ca_key = root / "ca.pem", root / "ca.key"
        self._openssl(
            "req", "-x509", *self._new_key(self.ca_key), "-days", "3650",
            "-subj", "/O=Homelab Tests/CN=Homelab Test CA", "-out", str(self.ca_cert),
        )  # fmt: skip

    @staticmethod
    def _new_key(path: Path) -> list[str]:
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(path)]  # fmt: skip

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    def issue(self, name: str, start: str, end: str, cn: str = "localhost") -> tuple[Path, Path]:
        """A certificate signed by the CA, valid from ``start`` to ``end`` (YYYYMMDDHHMMSSZ)."""
        key, csr, cert = (self.root / f"{name}{ext}" for ext in (".key", ".csr", ".pem"))
        self._openssl(
            "req", "-new", *self._new_key(key), "-subj", f"/O=Homelab/CN={cn}",
            "-addext", SAN, "-out", str(csr),
        )  # fmt: skip
        self._openssl(
            "ca", "-batch", "-config", str(self.root / "ca.cnf"), "-cert", str(self.ca_cert),
            "-keyfile", str(self.ca_key), "-in", str(csr), "-out", str(cert), "-notext",
            "-startdate", start, "-enddate", end,
        )  # fmt: skip
        return cert, key

    def issue_for_days(self, name: str, days: int) -> tuple[Path, Path]:
        now = datetime.now(UTC)
        end = datetime.fromtimestamp(now.timestamp() + days * 86400, UTC)
        return self.issue(name, stamp(now, hours=-1), stamp(end))

    def self_signed(self, name: str, days: int) -> tuple[Path, Path]:
        key, cert = self.root / f"{name}.key", self.root / f"{name}.pem"
        self._openssl(
            "req", "-x509", *self._new_key(key), "-days", str(days),
            "-subj", "/CN=self-signed.test", "-addext", SAN, "-out", str(cert),
        )  # fmt: skip
        return cert, key


def stamp(moment: datetime, hours: int = 0) -> str:
    shifted = datetime.fromtimestamp(moment.timestamp() + hours * 3600, UTC)
    return shifted.strftime("%Y%m%d%H%M%SZ")


@contextmanager
def serving(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A server on 127.0.0.1 that passes each connection to ``handle``; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A TLS server that completes handshakes and hangs up; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handshake(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # until the client hangs up
        except OSError:  # failed handshakes (the client refusing the certificate) too
            conn.close()

    with serving(handshake) as port:
        yield port


@contextmanager
def plain_tcp_server() -> Iterator[int]:
    """A server that accepts connections and answers like HTTP, not TLS."""

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    with serving(answer) as port:
        yield port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


#: A connect timeout shorter than the default, and the run timeout the tests give.
FAST: dict[str, Any] = {"connect_timeout": 5.0, "timeout": 30}


def one_each(run: PluginRun) -> PluginRun:
    """The run, checked: it ended ``ok`` and returned each metric name once."""
    run.assert_ok()
    names = [m.name for m in run.metrics]
    assert len(set(names)) == len(names), names
    return run


def test_the_plugin_type_registers_through_its_hook() -> None:
    manager = PluginManager(load_entry_points=False)
    manager.register(tls_cert, name="tls_cert")
    assert manager.get_type("tls_cert") is TlsCert
    assert validate_plugin_type(TlsCert) == []


async def test_a_30_day_certificate_has_29_to_30_days_left(pki: Pki) -> None:
    with tls_server(*pki.issue_for_days("d30", 30)) as port:
        run = await run_plugin_async(
            TlsCert, host="127.0.0.1", port=port, ca_file=str(pki.ca_cert), **FAST
        )
    days = one_each(run).metric("tls.days_left")
    assert 29 <= days.value <= 30
    assert (days.unit, days.device_class) == ("days", "duration")
    assert run.value("tls.up") == 1
    assert run.health is not None
    assert run.health.state == "ok"


async def test_ca_file_makes_a_certificate_of_the_test_ca_verify(pki: Pki) -> None:
    with tls_server(*pki.issue_for_days("trusted", 90)) as port:
        run = await run_plugin_async(
            TlsCert, host="127.0.0.1", port=port, ca_file=str(pki.ca_cert), **FAST
        )
    assert one_each(run).value("tls.valid_chain") == 1


async def test_issuer_and_subject_are_labels(pki: Pki) -> None:
    with tls_server(*pki.issue_for_days("labels", 90)) as port:
        run = await run_plugin_async(
            TlsCert, host="127.0.0.1", port=port, ca_file=str(pki.ca_cert), **FAST
        )
    labels = {"subject": "CN=localhost,O=Homelab", "issuer": "CN=Homelab Test CA,O=Homelab Tests"}
    assert one_each(run).metric("tls.days_left").labels == labels
    assert run.metric("tls.valid_chain").labels == labels
    assert run.health is not None
    assert "CN=localhost,O=Homelab" in run.health.message


async def test_an_expired_certificate_fails_with_negative_days_left(pki: Pki) -> None:
    with tls_server(*pki.issue("expired", "20200101000000Z", "20200201000000Z")) as port:
        run = await run_plugin_async(
            TlsCert, host="127.0.0.1", port=port, ca_file=str(pki.ca_cert), **FAST
        )
    assert one_each(run).value("tls.days_left") < -365
    assert run.value("tls.valid_chain") == 0  # OpenSSL refuses expired certificates
    assert run.health is not None
    assert run.health.state == "failing"
    assert "expired" in run.health.message
    assert "2020-02-01" in run.health.message


async def test_expiry_within_warn_days_is_degraded(pki: Pki) -> None:
    with tls_server(*pki.issue_for_days("soon", 5)) as port:
        run = await run_plugin_async(
            TlsCert, host="127.0.0.1", port=port, ca_file=str(pki.ca_cert), warn_days=14, **FAST
        )
    assert 4 <= one_each(run).value("tls.days_left") <= 5
    assert run.health is not None
    assert run.health.state == "degraded"
    message = run.health.message
    assert "expires in 5.0 days" in message or "expires in 4.9" in message


async def test_a_self_signed_certificate_does_not_verify_against_the_system_store(
    pki: Pki,
) -> None:
    with tls_server(*pki.self_signed("self", 30)) as port:
        run = await run_plugin_async(TlsCert, host="127.0.0.1", port=port, **FAST)
    assert one_each(run).value("tls.valid_chain") == 0
    assert 29 <= run.value("tls.days_left") <= 30
    assert run.health is not None
    assert run.health.state == "failing"
    assert "does not verify: self-signed certificate" in run.health.message


async def test_verify_false_still_reads_a_self_signed_certificate(pki: Pki) -> None:
    with tls_server(*pki.self_signed("self-noverify", 30)) as port:
        run = await run_plugin_async(TlsCert, host="127.0.0.1", port=port, verify=False, **FAST)
    assert 29 <= one_each(run).value("tls.days_left") <= 30
    assert not run.has("tls.valid_chain")
    assert run.metric("tls.days_left").labels["subject"] == "CN=self-signed.test"
    assert run.health is not None
    assert run.health.state == "ok"


async def test_a_name_the_certificate_does_not_cover_does_not_verify(pki: Pki) -> None:
    with tls_server(*pki.issue_for_days("named", 30)) as port:
        run = await run_plugin_async(
            TlsCert,
            host="127.0.0.1",
            port=port,
            server_name="other.test",
            ca_file=str(pki.ca_cert),
            **FAST,
        )
    assert one_each(run).value("tls.valid_chain") == 0
    assert run.health is not None
    assert "does not verify: Hostname mismatch" in run.health.message


async def test_a_refused_connection_is_a_successful_collection_reporting_down() -> None:
    port = free_port()
    run = one_each(await run_plugin_async(TlsCert, host="127.0.0.1", port=port, **FAST))
    assert [(m.name, m.value) for m in run.metrics] == [("tls.up", 0)]
    assert run.health == HealthReport("failing", f"127.0.0.1:{port} refused the connection")


async def test_a_server_that_does_not_speak_tls_is_reported_down() -> None:
    with plain_tcp_server() as port:
        run = await run_plugin_async(TlsCert, host="127.0.0.1", port=port, **FAST)
    assert one_each(run).value("tls.up") == 0
    assert run.health is not None
    assert run.health.state == "failing"
    assert run.health.message.startswith(f"TLS handshake with 127.0.0.1:{port} failed")


async def test_a_server_that_never_answers_times_out_as_down() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never shakes hands
        port = silent.getsockname()[1]
        run = await run_plugin_async(
            TlsCert, host="127.0.0.1", port=port, **{**FAST, "connect_timeout": 0.5}
        )
    assert one_each(run).value("tls.up") == 0
    assert run.health == HealthReport("failing", f"127.0.0.1:{port} did not answer within 0.5 s")


async def test_a_missing_ca_file_is_an_error_of_the_plugin(tmp_path: Path) -> None:
    run = await run_plugin_async(
        TlsCert,
        host="127.0.0.1",
        port=free_port(),
        ca_file=str(tmp_path / "nope.pem"),
        timeout=30,
    )
    assert run.status is ExecutionStatus.ERROR
    assert run.metrics == []


def test_read_certificate_agrees_with_openssl_on_dates_and_names(pki: Pki) -> None:
    cert, _ = pki.issue("far", "20240101120000Z", "20610101000000Z")  # GeneralizedTime after 2049
    info = read_certificate(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    assert info.not_before == datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert info.not_after == datetime(2061, 1, 1, tzinfo=UTC)
    assert info.subject == "CN=localhost,O=Homelab"
    assert info.issuer == "CN=Homelab Test CA,O=Homelab Tests"


def test_read_certificate_escapes_special_characters_in_names(pki: Pki) -> None:
    cert, _ = pki.issue("odd", "20240101000000Z", "20250101000000Z", cn="a\\,b=c")
    info = read_certificate(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    assert info.subject == "CN=a\\,b\\=c,O=Homelab"
