"""Schemathesis against a live ``homelab serve``: no server errors, nothing off-schema.

The server is a real process (:mod:`live_server`) with the bundled ``system`` plugin. The
``schemathesis`` CLI (4.x) runs every check but one (see below) on every operation of
``/openapi.json``, including the POST operations, with a bounded number of examples and a
bounded time.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import LiveServer, live_server, sqlite_url
from services import unavailable

pytestmark = pytest.mark.slow

#: Examples per operation and phase.
MAX_EXAMPLES = 30
#: Seconds the whole schemathesis run may take.
RUN_TIMEOUT = 100
#: The server's API token: the schema declares bearer auth on changes, so the server runs
#: with a token and schemathesis sends it (and checks that requests without it fail).
TOKEN = "schemathesis-token-7d2e"

SCHEMATHESIS_CONFIG = """\
[warnings]
# A reference that does not resolve means part of a response schema goes unchecked.
fail-on = ["unresolvable_reference"]
"""

#: Hooks that make the bodies of ``POST /api/plugins`` real instances (random ``type``
#: names and options are, rightly, nearly always refused), so that the stateful phase
#: follows the document's links: create, read, change, delete.
SCHEMATHESIS_HOOKS = """\
import re

import schemathesis

_made = 0


@schemathesis.hook
def map_body(ctx, body):
    # Only values the schema allows are replaced, by others it allows: a body generated to
    # break the schema still breaks it (and must still be refused).
    global _made
    operation = ctx.operation
    if operation is None or (operation.method.upper(), operation.path) != (
        "POST", "/api/plugins"
    ) or not isinstance(body, dict):
        return body
    _made += 1
    body = dict(body)
    if isinstance(body.get("id"), str):
        slug = re.sub(r"[^a-z0-9_-]", "", body["id"].lower())[:40]
        body["id"] = slug if slug[:1].isalpha() else f"made-{_made}"
    if isinstance(body.get("type"), str):
        body["type"] = "tcp"
    if isinstance(body.get("options"), dict):
        body["options"] = {"host": "127.0.0.1", "port": 9}
    for key, seconds in (("interval", 3600), ("timeout", 5)):
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            body[key] = seconds  # not an instance that runs a thousand times a second
    return body
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("schemathesis-server")
    config = (
        f'[server]\napi_token = "{TOKEN}"\n\n'
        f'[database]\nurl = "{sqlite_url(directory)}"\n\n'
        "[scheduler]\njitter = 0\n\n"
        "[store]\nflush_interval = 0.2\n\n"
        '[plugins.system]\ntype = "system"\ninterval = 1\n'
    )
    with live_server(directory, config=config) as running:
        yield running


def dangling_references(document: dict[str, Any]) -> list[str]:
    """Every local ``$ref`` of ``document`` that points at nothing."""

    def resolves(ref: str) -> bool:
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#") and not resolves(ref):
                found.add(ref)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    return sorted(found)


def test_openapi_references_resolve(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert dangling_references(document) == []


def test_schemathesis_finds_no_failures(server: LiveServer, tmp_path: Path) -> None:
    if importlib.util.find_spec("schemathesis") is None:
        unavailable("schemathesis is not installed (pip install 'homelab-core[dev]')")
    config = tmp_path / "schemathesis.toml"
    config.write_text(SCHEMATHESIS_CONFIG, encoding="utf-8")
    (tmp_path / "homelab_hooks.py").write_text(SCHEMATHESIS_HOOKS, encoding="utf-8")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "homelab_hooks", "PYTHONPATH": str(tmp_path)}
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        # The history times must be real dates within the range the API accepts, which a
        # JSON Schema pattern cannot say; such requests are rightly refused with a 400.
        # Every other check, including every response against its schema, stays on.
        "--exclude-checks",
        "positive_data_acceptance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--workers",
        "1",
        "--header",
        f"Authorization: Bearer {TOKEN}",
    ]
    try:
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        pytest.fail(f"schemathesis ran longer than {RUN_TIMEOUT} s:\n{output[-20000:]}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis failed:\n{output[-30000:]}"
    assert "Operations:" in output
    # The stateful phase followed links from created instances (and others) onwards.
    links = re.search(r"API Links:\s*(\d+) covered", output)
    assert links is not None and int(links.group(1)) > 0, output[-5000:]
    with closing(sqlite3.connect(server.database)) as conn, conn:
        made = conn.execute(
            "SELECT COUNT(*) FROM homelab_execution WHERE instance_id LIKE '%' AND instance_id"
            " != 'system'"
        ).fetchone()[0]
    assert made > 0, "no instance made through the API ever ran"
    # Still alive: no request brought the server down.
    assert server.process.poll() is None, server.stderr()
    assert "Traceback" not in server.stderr(), server.stderr()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"B,h?\xffX", "application/json"),  # not UTF-8: found by schemathesis
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[1]", "application/json"),
        (b'{"enabled": "yes"}', "application/json"),
        (b'{"enabled": true}', "text/plain"),
    ],
    ids=["not-utf8", "not-json", "empty", "array", "wrong-type", "text-plain"],
)
def test_malformed_enable_bodies_get_a_json_4xx(
    server: LiveServer, body: bytes, content_type: str
) -> None:
    response = httpx.post(
        f"{server.url}/api/plugins/system/enable",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.json()["error"]["code"], response.text


HISTORY = "/api/plugins/system/metrics/history?metric=cpu.percent&"
EXECUTIONS = "/api/plugins/system/executions?"
#: Extreme but well-formed inputs: each must get a result or a 4xx, never a 500.
EDGE_QUERIES = [
    HISTORY + "since=-99999999999999999999w",
    HISTORY + "since=-1e308&until=1e308",
    HISTORY + "since=0&until=1e308",
    HISTORY + "since=-1000000000000w",
    HISTORY + "since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z",
    HISTORY + "since=-5m&step=1e-300",
    HISTORY + "since=-5m&step=1e300",
    HISTORY + "since=-5m&points=1",
    HISTORY + "since=-5m&points=2000",
    HISTORY + "since=nan",
    HISTORY + "since=-inf",
    HISTORY + "since=1e308",
    HISTORY + "labels=%3D%3D%2C",
    EXECUTIONS + "before=99999999999999999999999",
    EXECUTIONS + "before=-99999999999999999999999",
    EXECUTIONS + "before=0",
    EXECUTIONS + "limit=99999999999999999999999",
]


@pytest.mark.parametrize("path", EDGE_QUERIES)
def test_edge_inputs_get_no_server_error(server: LiveServer, path: str) -> None:
    """Extreme times, steps and ids, on an instance with stored data: a 4xx or a result."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=auth) as http:
        enabled = http.post("/api/plugins/system/enable", json={"enabled": True})
        assert enabled.status_code == 200, enabled.text
        deadline = time.monotonic() + 10
        while True:
            plain = http.get(HISTORY + "since=-1h")
            assert plain.status_code == 200, plain.text
            if plain.json()["series"]:
                break
            assert time.monotonic() < deadline, "no stored series of cpu.percent"
            time.sleep(0.2)
        response = http.get(path)
    assert response.status_code in (200, 400), (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
