"""``homelab serve`` as a real process, talked to from outside over loopback.

Every server here is a separate ``python -m homelab_core.cli serve`` process (see
:mod:`live_server`); the clients are httpx, the ``websockets`` library and sqlite3 on the
database file after the server has exited.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from live_server import LiveServer, live_server, serve_command, server_env, sqlite_url
from services import free_port, unavailable

pytestmark = pytest.mark.slow

#: Seconds between runs of the ``system`` instance in the shared server.
INTERVAL = 1.0
#: Seconds the store may hold an execution before writing it (the default flush interval).
FLUSH = 1.0
TOKEN = "test-token-3f9a1c"


def system_config(directory: Path, *, interval: float = INTERVAL, extra: str = "") -> str:
    """homelab.toml with the bundled ``system`` plugin only, on SQLite in ``directory``."""
    return (
        f'[database]\nurl = "{sqlite_url(directory)}"\n\n'
        f'{extra}\n[plugins.system]\ntype = "system"\ninterval = {interval}\n'
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def prometheus_values(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text exposition, by name."""
    values = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        values[name] = float(value.split(" ")[0])
    return values


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server with the ``system`` plugin at a 1 s interval, shared by this module."""
    directory = tmp_path_factory.mktemp("serve")
    with live_server(directory, config=system_config(directory)) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


# -- 1. the API's paths -----------------------------------------------------------------


SEED_GETS = [
    "/api/plugins",
    "/api/plugins/system",
    "/api/plugins/system/status",
    "/api/plugins/system/metrics",
    "/api/plugins/system/metrics/history?metric=cpu.percent&since=-5m",
    "/api/plugins/system/executions",
    "/api/plugins/categories/list",
    "/api/plugins/stats/summary",
]


@pytest.mark.parametrize("path", SEED_GETS)
def test_seed_get_paths_answer_200_with_json(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert isinstance(response.json(), dict)


def test_seed_post_enable_answers_200(client: httpx.Client) -> None:
    response = client.post("/api/plugins/system/enable", json={"enabled": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "system"
    assert body["enabled"] is True


def test_seed_responses_describe_the_configured_instance(client: httpx.Client) -> None:
    plugins = client.get("/api/plugins").json()
    assert [p["id"] for p in plugins["plugins"]] == ["system"]
    assert plugins["plugins"][0]["interval"] == INTERVAL
    details = client.get("/api/plugins/system").json()
    assert details["plugin"]["type"] == "system"
    categories = client.get("/api/plugins/categories/list").json()["categories"]
    assert sum(c["count"] for c in categories) == 1
    # Collections happen on their own: the latest values fill in within a few intervals.
    metrics = wait_for(
        "latest metrics of 'system'",
        lambda: client.get("/api/plugins/system/metrics").json()["metrics"],
        timeout=5 * INTERVAL + FLUSH,
    )
    assert "cpu.percent" in {m["name"] for m in metrics}


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/api/health", "application/json", '"ready":true'),
        ("/metrics", "text/plain", "homelab_core_runs_total"),
        ("/openapi.json", "application/json", '"openapi"'),
        ("/docs", "text/html", "<html"),
    ],
)
def test_service_paths_answer_200(
    client: httpx.Client, path: str, content_type: str, needle: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(content_type)
    assert needle in response.text.replace(" ", "")


# -- 2. enable/disable acts on the schedule -------------------------------------------------


def newest_execution_id(client: httpx.Client) -> int | None:
    response = client.get("/api/plugins/system/executions", params={"limit": 1})
    assert response.status_code == 200, response.text
    executions = response.json()["executions"]
    return executions[0]["id"] if executions else None


def test_disable_stops_runs_and_enable_resumes_them(client: httpx.Client) -> None:
    wait_for(
        "a first execution",
        lambda: newest_execution_id(client) is not None,
        timeout=3 * INTERVAL + FLUSH + 2,
    )
    try:
        response = client.post("/api/plugins/system/enable", json={"enabled": False})
        assert response.status_code == 200, response.text
        assert response.json()["enabled"] is False
        assert client.get("/api/plugins/system/status").json()["state"] == "disabled"
        # A run in flight at the moment of disabling may still finish and be written.
        time.sleep(INTERVAL + FLUSH + 0.5)
        stopped_at = newest_execution_id(client)
        time.sleep(3 * INTERVAL + FLUSH)
        assert newest_execution_id(client) == stopped_at, "runs went on while disabled"
        assert client.get("/api/plugins/system").json()["plugin"]["enabled"] is False
    finally:
        response = client.post("/api/plugins/system/enable", json={"enabled": True})
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is True
    # Within two intervals (plus the store's flush interval) it runs again.
    wait_for(
        "an execution after enabling again",
        lambda: newest_execution_id(client) != stopped_at,
        timeout=2 * INTERVAL + FLUSH + 0.5,
    )


# -- 3. the WebSocket ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_websocket_greets_then_streams_metrics(server: LiveServer) -> None:
    try:
        from websockets.asyncio.client import connect
    except ImportError:
        unavailable("websockets >= 13 is not installed (pip install 'homelab-core[dev]')")

    url = f"ws://127.0.0.1:{server.port}/ws/metrics"
    with anyio.fail_after(15):
        async with connect(url, open_timeout=5, close_timeout=2) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            seen: list[dict[str, Any]] = []
            while True:
                event = json.loads(await ws.recv())
                seen.append(event)
                assert "type" in event, event
                if event["type"] == "metrics" and event.get("plugin_id") == "system":
                    break
    assert isinstance(event["seq"], int)
    assert isinstance(event["ts"], int | float)
    data = event["data"]
    assert isinstance(data, list)
    assert data
    assert {"name", "value", "unit", "labels"} <= set(data[0])
    assert "cpu.percent" in {m["name"] for m in data}
    sequence = [e["seq"] for e in seen if "seq" in e]
    assert sequence == sorted(sequence), f"seq not increasing: {sequence}"


OFFER = "permessage-deflate; client_max_window_bits"


@pytest.mark.anyio
async def test_websocket_compression_is_declined_by_default(server: LiveServer) -> None:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{server.port}/ws/metrics"
    with anyio.fail_after(15):
        async with connect(url, open_timeout=5, close_timeout=2) as ws:  # offers deflate
            assert ws.request is not None
            assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert json.loads(await ws.recv())["type"] == "hello"


@pytest.mark.anyio
async def test_websocket_compression_can_be_enabled(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect

    config = system_config(tmp_path)
    with live_server(tmp_path, config=config, args=["--websocket-compression"]) as running:
        url = f"ws://127.0.0.1:{running.port}/ws/metrics"
        with anyio.fail_after(15):
            async with connect(url, open_timeout=5, close_timeout=2) as ws:
                assert ws.response is not None
                assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
                assert json.loads(await ws.recv())["type"] == "hello"


@pytest.fixture
def hypercorn_handshake() -> Iterator[Callable[[bool], str | None]]:
    """What hypercorn answers to a client that offers deflate, with compression on or off."""
    from hypercorn.protocol.ws_stream import Handshake

    from homelab_core.web.serve import hypercorn_websocket_compression

    def answer(enabled: bool) -> str | None:
        hypercorn_websocket_compression(enabled)
        handshake = Handshake(
            [
                (b"connection", b"Upgrade"),
                (b"upgrade", b"websocket"),
                (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-extensions", OFFER.encode()),
            ],
            "1.1",
        )
        status, headers, _ = handshake.accept(None, [])
        assert status == 101
        extensions = dict(headers).get(b"sec-websocket-extensions")
        return None if extensions is None else extensions.decode()

    try:
        yield answer
    finally:
        hypercorn_websocket_compression(True)  # hypercorn's own behaviour, for what follows


def test_hypercorn_websocket_compression_switches_both_ways(
    hypercorn_handshake: Callable[[bool], str | None],
) -> None:
    assert hypercorn_handshake(False) is None
    assert hypercorn_handshake(False) is None, "idempotent"
    answer = hypercorn_handshake(True)
    assert answer is not None and answer.startswith("permessage-deflate")
    assert hypercorn_handshake(False) is None


# -- 4. graceful shutdown drains the write queue -----------------------------------------


QUEUED_STORE = """[store]
flush_interval = 3600
batch_size = 10000000
queue_size = 10000000

[scheduler]
jitter = 0
"""


def stored_counts(database: Path) -> tuple[int, int, int, int]:
    """(samples, SUM(metric_count) of ok runs, ok runs, all executions) in the file."""
    with closing(sqlite3.connect(database)) as db, db:
        samples = db.execute("SELECT COUNT(*) FROM homelab_head").fetchone()[0]
        collected, ok_runs = db.execute(
            "SELECT COALESCE(SUM(metric_count), 0), COUNT(*) FROM homelab_execution"
            " WHERE status = 'ok'"
        ).fetchone()
        executions = db.execute("SELECT COUNT(*) FROM homelab_execution").fetchone()[0]
    db.close()
    return samples, collected, ok_runs, executions


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_collection_writes_every_sample(tmp_path: Path, sig: int) -> None:
    config = system_config(tmp_path, interval=0.5, extra=QUEUED_STORE)
    with live_server(tmp_path, config=config) as running:
        with httpx.Client(base_url=running.url, timeout=10.0) as http:
            time.sleep(3.0)
            counters = prometheus_values(http.get("/metrics").text)
            summary = http.get("/api/plugins/stats/summary").json()
        code = running.stop(sig)
        stderr = running.stderr()
    assert code == 0, f"exit code {code} after {signal.Signals(sig).name}. stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr

    written = counters["homelab_core_samples_written_total"]
    queued = counters["homelab_core_write_queue_depth"]
    runs = counters["homelab_core_runs_total"]
    # The samples really were waiting in the queue when the signal came.
    assert queued > 0, counters
    assert runs >= 3, counters
    assert counters["homelab_core_samples_dropped_total"] == 0, counters
    assert summary["samples_dropped"] == 0, summary

    samples, collected, ok_runs, executions = stored_counts(running.database)
    assert samples >= written + queued, (samples, counters)
    assert samples == collected, f"{samples} samples stored but ok executions collected {collected}"
    assert executions >= runs, (executions, counters)
    assert ok_runs >= 1


# -- 5. refusing to serve beyond loopback without a token ----------------------------------


def test_non_loopback_without_token_is_refused_before_binding(tmp_path: Path) -> None:
    (tmp_path / "homelab.toml").write_text(system_config(tmp_path), encoding="utf-8")
    started = time.monotonic()
    result = subprocess.run(
        serve_command("--host", "0.0.0.0", "--port", str(free_port())),
        cwd=tmp_path,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0, result.stderr
    assert elapsed < 20, f"took {elapsed:.1f} s to refuse"
    message = result.stderr
    assert "token" in message.lower(), message
    assert "--insecure" in message, message
    assert "Traceback" not in message, message
    assert "Running on" not in message, message
    # It stopped before starting anything: the hub never opened its database.
    assert not (tmp_path / "homelab.db").exists()


def test_non_loopback_with_token_starts_and_guards_changes(tmp_path: Path) -> None:
    with (
        live_server(
            tmp_path,
            config=system_config(tmp_path),
            args=["--host", "0.0.0.0"],
            env={"HOMELAB_API_TOKEN": TOKEN},
        ) as running,
        httpx.Client(base_url=running.url, timeout=10.0) as http,
    ):
        assert http.get("/api/plugins").status_code == 200
        path = "/api/plugins/system/enable"
        body = {"enabled": True}

        missing = http.post(path, json=body)
        assert missing.status_code == 401, missing.text
        assert missing.json()["error"]["code"]

        wrong = http.post(path, json=body, headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 403, wrong.text

        allowed = http.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["enabled"] is True


def test_non_loopback_with_insecure_starts(tmp_path: Path) -> None:
    with (
        live_server(
            tmp_path, config=system_config(tmp_path), args=["--host", "0.0.0.0", "--insecure"]
        ) as running,
        httpx.Client(base_url=running.url, timeout=10.0) as http,
    ):
        response = http.get("/api/plugins")
        assert response.status_code == 200, response.text
        assert [p["id"] for p in response.json()["plugins"]] == ["system"]


# -- 6. the optional uvicorn server ------------------------------------------------------


def test_uvicorn_server(tmp_path: Path) -> None:
    if importlib.util.find_spec("uvicorn") is None:
        (tmp_path / "homelab.toml").write_text(system_config(tmp_path), encoding="utf-8")
        result = subprocess.run(
            serve_command("--server", "uvicorn", "--port", str(free_port())),
            cwd=tmp_path,
            env=server_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0, result.stderr
        assert "'uvicorn' extra" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert not (tmp_path / "homelab.db").exists()
        return
    config = system_config(tmp_path, interval=0.5, extra=QUEUED_STORE)
    with live_server(tmp_path, config=config, args=["--server", "uvicorn"]) as running:
        with httpx.Client(base_url=running.url, timeout=10.0) as http:
            response = http.get("/api/plugins")
            assert response.status_code == 200, response.text
            assert [p["id"] for p in response.json()["plugins"]] == ["system"]
            time.sleep(1.5)
            counters = prometheus_values(http.get("/metrics").text)
        code = running.stop(signal.SIGTERM)
        stderr = running.stderr()
    # Graceful shutdown under uvicorn drains the write queue as under hypercorn ...
    assert counters["homelab_core_write_queue_depth"] > 0, counters
    samples, collected, _, executions = stored_counts(running.database)
    assert samples >= counters["homelab_core_write_queue_depth"], (samples, counters)
    assert samples == collected
    assert executions >= counters["homelab_core_runs_total"], (executions, counters)
    # ... and the command ends the same way: exit code 0, whichever server ran.
    assert code == 0, f"exit code {code} after SIGTERM under uvicorn. stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr


# -- 7. start-up as a new user meets it -------------------------------------------------------


def homelab(directory: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``homelab ARGS`` in ``directory`` to its end, as a separate process."""
    return subprocess.run(
        [*serve_command()[:-1], *args],
        cwd=directory,
        env=server_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_refused_like_check_config(directory: Path, *config_args: str) -> str:
    """``homelab serve`` refuses to start with exit code 2 and check-config's own lines."""
    checked = homelab(directory, "check-config", *config_args)
    served = homelab(directory, "serve", "--port", str(free_port()), *config_args)
    assert checked.returncode == 2, checked.stderr
    assert served.returncode == 2, served.stderr
    assert served.stderr == checked.stderr, (served.stderr, checked.stderr)
    assert "Traceback" not in served.stderr
    assert "serving on" not in served.stderr
    assert len(served.stderr.strip().splitlines()) <= 3, served.stderr
    return served.stderr


def test_serve_refuses_a_bad_plugin_config_before_announcing(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(
        f'[database]\nurl = "{sqlite_url(tmp_path)}"\n\n[plugins.x]\ntype = "nosuch"\n'
    )
    message = assert_refused_like_check_config(tmp_path, "--config", "bad.toml")
    assert "error: bad.toml [plugins.x] type: unknown plugin type 'nosuch'" in message
    assert not (tmp_path / "homelab.db").exists()


def test_serve_refuses_bad_toml_with_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[server\n")
    message = assert_refused_like_check_config(tmp_path, "--config", "bad.toml")
    assert "bad.toml: not valid TOML" in message


def test_serve_refuses_a_missing_database_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    (tmp_path / "homelab.toml").write_text(
        f'[database]\nurl = "sqlite://{missing}/homelab.db"\n\n[plugins.system]\n'
    )
    message = assert_refused_like_check_config(tmp_path)
    assert f"directory '{missing}' does not exist" in message


def test_serve_refuses_auth_all_without_a_token_like_check_config(tmp_path: Path) -> None:
    (tmp_path / "homelab.toml").write_text(
        system_config(tmp_path, extra='[server]\nauth = "all"\n')
    )
    message = assert_refused_like_check_config(tmp_path)
    assert "api_token" in message


def test_a_database_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    """Not an error the settings show (nothing listens on the database's port): exit 1,
    one line with the password hidden, no traceback, and never announced."""
    if importlib.util.find_spec("asyncpg") is None:
        unavailable("asyncpg is not installed (pip install 'homelab-core[postgres]')")
    url = f"postgres://homelab:s3cret@127.0.0.1:{free_port()}/homelab"
    (tmp_path / "homelab.toml").write_text(f'[database]\nurl = "{url}"\n\n[plugins.system]\n')
    result = homelab(tmp_path, "serve", "--port", str(free_port()))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "serving on" not in result.stderr, result.stderr
    assert "s3cret" not in result.stderr, result.stderr
    assert result.stderr.startswith(
        "error: cannot open the store at postgres://homelab:**********@"
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_address_of_no_interface_is_a_configuration_error(tmp_path: Path) -> None:
    """192.0.2.55 (TEST-NET-1) is on no interface: the host setting is wrong, exit 2."""
    (tmp_path / "homelab.toml").write_text(system_config(tmp_path))
    result = homelab(tmp_path, "serve", "--host", "192.0.2.55", "--insecure", "--port", "8765")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        "Error: cannot listen on http://192.0.2.55:8765: Cannot assign requested address\n"
    )
    assert not (tmp_path / "homelab.db").exists()


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "homelab.toml").write_text(system_config(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = homelab(tmp_path, "serve", "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        f"Error: cannot listen on http://127.0.0.1:{port}: Address already in use\n"
    )
    assert not (tmp_path / "homelab.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_start_that_waits_for_the_database(tmp_path: Path, sig: int) -> None:
    """A database that accepts the connection and never answers: the start waits (up to
    the store's 60 s), and Ctrl-C or SIGTERM ends it at once, cleanly."""
    if importlib.util.find_spec("asyncpg") is None:
        unavailable("asyncpg is not installed (pip install 'homelab-core[postgres]')")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgres://homelab:s3cret@127.0.0.1:{silent.getsockname()[1]}/homelab"
        (tmp_path / "homelab.toml").write_text(f'[database]\nurl = "{url}"\n\n[plugins.system]\n')
        with (tmp_path / "serve.stderr").open("wb") as err:
            process = subprocess.Popen(
                serve_command("--port", str(free_port())),
                cwd=tmp_path,
                env=server_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            time.sleep(2.0)
            assert process.poll() is None, (tmp_path / "serve.stderr").read_text()
            process.send_signal(sig)
            code = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    stderr = (tmp_path / "serve.stderr").read_text()
    assert code == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert "serving on" not in stderr, stderr


def test_port_0_binds_a_free_port_and_announces_it(tmp_path: Path) -> None:
    with live_server(tmp_path, config=system_config(tmp_path), port=0) as running:
        assert running.port != 0
        assert f"serving on http://127.0.0.1:{running.port}\n" in running.stderr()
        assert f"API docs: http://127.0.0.1:{running.port}/docs" in running.stderr()
        with httpx.Client(base_url=running.url, timeout=10.0) as http:
            assert http.get("/api/health").status_code == 200
            # The bound port is the server's own: its address passes the Host check.
            assert http.get("/api/plugins").status_code == 200


# -- 8. web pages on other sites ----------------------------------------------------------------


def test_a_rebound_name_is_refused(client: httpx.Client, server: LiveServer) -> None:
    refused = client.get("/api/plugins", headers={"Host": f"evil.example:{server.port}"})
    assert refused.status_code == 421, refused.text
    assert refused.json()["error"]["code"] == "unknown_host"
    assert (
        client.get("/api/plugins", headers={"Host": f"localhost:{server.port}"}).status_code == 200
    )


def test_the_issues_cross_site_run_is_refused(client: httpx.Client, server: LiveServer) -> None:
    """``POST /api/plugins/{id}/run`` with no body and a foreign Origin answered 200."""
    run = "/api/plugins/system/run"
    attack = client.post(run, headers={"Origin": "http://evil.example"})
    assert attack.status_code == 403, attack.text
    assert attack.json()["error"]["code"] == "forbidden_origin"
    form = client.post(run, content=b"x=1", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415, form.text
    assert form.json()["error"]["code"] == "unsupported_media_type"
    ours = client.post(run, json={}, headers={"Origin": server.url})
    assert ours.status_code == 200, ours.text


@pytest.mark.anyio
async def test_a_cross_site_websocket_is_refused(server: LiveServer) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    url = f"ws://127.0.0.1:{server.port}/ws/metrics"
    with anyio.fail_after(15):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin="http://evil.example", open_timeout=5):
                pass
        assert refused.value.response.status_code == 403
        own = f"http://127.0.0.1:{server.port}"
        async with connect(url, origin=own, open_timeout=5, close_timeout=2) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
