"""Instances at run time against a real ``homelab serve`` process and an outside client
(httpx): an ``http`` instance created, run, changed, kept across a restart and deleted;
and ``kill -HUP`` reloading the file."""

from __future__ import annotations

import itertools
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer, live_server

SECRET = "bearer-s3cret-value"
JSON = {"Content-Type": "application/json"}


@contextmanager
def target() -> Iterator[list[str]]:
    """An HTTP server on 127.0.0.1 that answers 200 and records the paths asked for."""
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    paths.append(f"http://127.0.0.1:{server.server_address[1]}")  # [0]: the base URL
    try:
        yield paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def until(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout} s")
        time.sleep(0.1)


CONFIG = """
[scheduler]
jitter = 0
[plugins.steady]
type = "tcp"
host = "127.0.0.1"
port = {port}
interval = 0.5
"""


def config(port: int, extra: str = "") -> str:
    return CONFIG.format(port=port) + extra


def run_paths(paths: list[str]) -> list[str]:
    return paths[1:]


def test_an_http_instance_lives_through_the_api_of_a_real_server(tmp_path: Path) -> None:
    with target() as a, target() as b:
        with (
            live_server(tmp_path, config=config(1)) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            body = {
                "id": "nas-web",
                "type": "http",
                "interval": 0.5,
                "options": {"url": f"{a[0]}/first", "bearer_token": SECRET},
            }
            made = client.post("/api/plugins", json=body)
            assert made.status_code == 201, made.text
            until(lambda: "/first" in run_paths(a))
            changed = client.patch(
                "/api/plugins/nas-web", json={"options": {"url": f"{b[0]}/second"}}
            )
            assert changed.status_code == 200, changed.text
            until(lambda: "/second" in run_paths(b))
            bad = client.post(
                "/api/plugins", json={"id": "x", "type": "http", "options": {"url": "ftp://nas"}}
            )
            assert bad.status_code == 400 and "[plugins.x] url" in bad.json()["error"]["message"]
            assert client.patch("/api/plugins/steady", json={"interval": 1}).status_code == 409
            seen = [
                client.get(p).text
                for p in (
                    "/api/plugins",
                    "/api/plugins/nas-web",
                    "/metrics",
                    "/api/plugins/nas-web/executions",
                    "/openapi.json",
                )
            ]
            seen.append(made.text + changed.text)
        assert all(SECRET not in text for text in seen)
        assert SECRET not in server.stderr() + server.stdout()
        with closing(sqlite3.connect(server.database)) as conn, conn:
            db_rows = conn.execute("SELECT config FROM homelab_instance").fetchall()
        assert SECRET not in str(db_rows)  # only the API's own table keeps it, to restart
        with (
            live_server(tmp_path, config=config(1)) as server,
            httpx.Client(base_url=server.url, timeout=10) as client,
        ):
            again = client.get("/api/plugins/nas-web").json()
            assert again["plugin"]["source"] == "api"
            assert again["plugin"]["config"]["url"] == f"{b[0]}/second"
            count = len(run_paths(b))
            until(lambda: len(run_paths(b)) > count)  # runs again after the restart
            assert client.delete("/api/plugins/nas-web").status_code == 200
            assert client.get("/api/plugins/nas-web").status_code == 404
            assert [p["id"] for p in client.get("/api/plugins").json()["plugins"]] == ["steady"]


def executions(server: LiveServer, instance_id: str) -> list[float]:
    with closing(sqlite3.connect(server.database)) as conn, conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT started_at FROM homelab_execution WHERE instance_id = ?"
                " ORDER BY started_at",
                [instance_id],
            )
        ]


def test_sighup_applies_the_file_and_a_broken_file_changes_nothing(tmp_path: Path) -> None:
    extra = '[plugins.changes]\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1\ninterval = 0.5\n'
    with (
        live_server(tmp_path, config=config(1, extra)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        until(lambda: len(executions(server, "changes")) >= 1)
        path = tmp_path / "homelab.toml"
        path.write_text(
            config(
                1,
                extra.replace("port = 1", "port = 2")
                + ('[plugins.added]\ntype = "tcp"\nhost = "127.0.0.1"\nport = 3\ninterval = 0.5\n'),
            )
        )
        server.process.send_signal(signal.SIGHUP)
        until(lambda: len(executions(server, "added")) >= 1)
        plugins = {p["id"]: p for p in client.get("/api/plugins").json()["plugins"]}
        assert plugins["changes"]["config"]["port"] == 2
        assert list(plugins) == ["steady", "changes", "added"]
        path.write_text(config(1) + '[plugins.broken]\ntype = "tcp"\nport = "x"\n')
        server.process.send_signal(signal.SIGHUP)
        until(lambda: "nothing changed" in server.stderr())
        assert "[plugins.broken] host: is required" in server.stderr() or (
            "[plugins.broken]" in server.stderr()
        )
        time.sleep(1.0)
        plugins = [p["id"] for p in client.get("/api/plugins").json()["plugins"]]
        assert plugins == ["steady", "changes", "added"]
        assert server.process.poll() is None
    starts = executions(server, "steady")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 4 and max(gaps) < 0.9, gaps  # runs every 0.5 s, no gap
