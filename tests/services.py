"""Real servers for tests, started on 127.0.0.1 and stopped afterwards.

A server whose binaries are missing skips its tests, unless ``HOMELAB_REQUIRE_SERVICES`` is
set (CI sets it), in which case the tests fail: CI must never skip them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


def unavailable(what: str) -> None:
    """Skip, or fail when services are required."""
    if os.environ.get("HOMELAB_REQUIRE_SERVICES"):
        pytest.fail(f"{what} (HOMELAB_REQUIRE_SERVICES is set, so this cannot be skipped)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Seconds a test TLS server waits for a client's handshake before it hangs up.
HANDSHAKE_TIMEOUT = 5.0


class TLSHTTPServer(ThreadingHTTPServer):
    """An HTTPS server for tests: the TLS handshake runs in the request's own thread, with
    a timeout, so a client that connects and never finishes its handshake (a cancelled
    run whose socket is not yet closed) holds neither the accept loop nor ``shutdown()``.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: Any, context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        with self.context.wrap_socket(request, server_side=True) as tls:
            self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up during or after the handshake are expected in tests


def self_signed_certificate(folder: Path, days: int = 30) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 valid for ``days`` days, and its key, made
    in ``folder`` with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("the openssl command is not installed")
        raise AssertionError  # unreachable: unavailable() raises
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", str(days),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


def _kill(proc: subprocess.Popen[bytes] | None) -> None:
    """End a server process at once (SIGKILL: as if its host died) and reap it."""
    if proc is not None:
        proc.kill()
        proc.wait(timeout=10)


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


class PostgresCluster:
    """A throw-away PostgreSQL cluster on 127.0.0.1 that a test may stop and start again.

    :meth:`stop` is a fast shutdown (the server disconnects its clients at once, as when
    an administrator stops it); :meth:`start` starts it again on the same port and data.
    """

    def __init__(self, root: Path, prefix: list[str], server: str, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.sockets = root / "run"
        self.log = root / "server.log"
        self._prefix = prefix
        self._server = server
        self.port = port
        self.url = f"postgres://postgres@127.0.0.1:{port}/postgres"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    *self._prefix,
                    self._server,
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockets),
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self._proc = proc
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"PostgreSQL did not start: {self.log.read_text(errors='replace')}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server at once (fast shutdown: open connections are closed)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # The postmaster's pid is in its pid file; under runuser, proc is runuser itself.
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGINT)
        except (OSError, ValueError, IndexError):
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throw-away PostgreSQL cluster, started; stopped and deleted afterwards."""
    initdb, server = _postgres_bin("initdb"), _postgres_bin("postgres")
    if not initdb or not server:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
        raise AssertionError  # unreachable: unavailable() raises
    # PostgreSQL refuses to run as root: run it as the 'postgres' system user then.
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run PostgreSQL")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="homelab-pg-"))
    cluster = PostgresCluster(root, prefix, server, free_port())
    cluster.sockets.mkdir()
    if owner is not None:
        for path in (root, cluster.sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    try:
        subprocess.run(
            [
                *prefix,
                initdb,
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster; yields the URL of its ``postgres`` database."""
    with postgres_cluster() as cluster:
        yield cluster.url


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server at ``server_url``; returns its URL."""
    psql = _postgres_bin("psql")
    if not psql:
        unavailable("psql is not installed (apt-get install postgresql-client)")
        raise AssertionError  # unreachable
    subprocess.run(
        [psql, server_url, "-v", "ON_ERROR_STOP=1", "-qc", f'CREATE DATABASE "{name}"'],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return server_url.rsplit("/", 1)[0] + f"/{name}"


class RedisServer:
    """A throw-away ``redis-server`` on 127.0.0.1 (no persistence) that a test may stop,
    start again on the same port, or freeze (``CLIENT PAUSE``)."""

    def __init__(self, binary: str, root: Path, port: int) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.log = root / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"redis-server did not start: {log}")
            time.sleep(0.05)

    def command(self, *args: str) -> bytes:
        """Send one command (inline form) and return the first line of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall((" ".join(args) + "\r\n").encode())
            return conn.recv(4096).split(b"\r\n", 1)[0]

    def stop(self) -> None:
        """Stop the server at once (SIGKILL: as if its host died)."""
        proc, self._proc = self._proc, None
        _kill(proc)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A throw-away ``redis-server``, started; stopped and its directory deleted afterwards."""
    binary = shutil.which("redis-server")
    if not binary:
        unavailable("Redis is not installed (apt-get install redis-server)")
        raise AssertionError  # unreachable: unavailable() raises
    root = Path(tempfile.mkdtemp(prefix="homelab-redis-"))
    server = RedisServer(binary, root, free_port())
    try:
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class MosquittoBroker:
    """A throw-away ``mosquitto`` on 127.0.0.1 (anonymous, no persistence) that a test may
    stop and start again on the same port."""

    def __init__(self, binary: str, root: Path, port: int) -> None:
        self.binary = binary
        self.root = root
        self.port = port
        self.host = "127.0.0.1"
        self.url = f"mqtt://127.0.0.1:{port}"
        self.log = root / "mosquitto.log"
        self.config = root / "mosquitto.conf"
        self.config.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # As root, mosquitto would change to its own user, who cannot write here.
            "user root\n"
            "log_dest stdout\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"mosquitto did not start: {self.log.read_text(errors='replace')}"
                    ) from None
                time.sleep(0.05)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the broker at once (SIGKILL: as if its host died; no will is sent)."""
        proc, self._proc = self._proc, None
        _kill(proc)


@contextmanager
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A throw-away MQTT broker, started; stopped and its directory deleted afterwards."""
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None
    )
    if not binary:
        unavailable("mosquitto is not installed (apt-get install mosquitto)")
        raise AssertionError  # unreachable: unavailable() raises
    root = Path(tempfile.mkdtemp(prefix="homelab-mosquitto-"))
    broker = MosquittoBroker(binary, root, free_port())
    try:
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
