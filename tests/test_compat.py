"""``homelab_core.compat``: each dependency's private name still has the shape we rely on.

Every test runs against the installed dependency (no stand-ins for it) and, when an
upgrade breaks the assumption, fails with the distribution, its version and the compat
function to update.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from importlib.metadata import version
from typing import Any

import anyio
import pytest

from homelab_core import compat
from homelab_core.store import models
from homelab_core.store.store import APP, Store

pytestmark = pytest.mark.anyio


def broken(dist: str, what: str, function: str) -> str:
    """The failure message: what changed, in which version, and what to update."""
    return f"{dist} {version(dist)} {what}: homelab_core.compat.{function} must be updated"


# -- tortoise-orm: tortoise.context._current_context ---------------------------------------


def current_context_variable() -> ContextVar[Any]:
    try:
        variable = compat.tortoise_context()
    except (ImportError, AttributeError) as exc:
        pytest.fail(
            broken(
                "tortoise-orm",
                f"no longer has tortoise.context._current_context ({exc})",
                "tortoise_context",
            )
        )
    if not isinstance(variable, ContextVar):
        pytest.fail(
            broken(
                "tortoise-orm",
                f"has a tortoise.context._current_context that is a {type(variable).__name__},"
                " not a ContextVar",
                "tortoise_context",
            )
        )
    return variable


def test_tortoise_context_variable_decides_the_current_context() -> None:
    from tortoise.connection import get_connections
    from tortoise.context import TortoiseContext, get_current_context

    variable = current_context_variable()
    before = get_current_context()
    context = TortoiseContext()
    token = variable.set(context)
    try:
        current = get_current_context()
        connections = get_connections() if current is not None else None
    finally:
        variable.reset(token)
    assert current is context and connections is context.connections, broken(
        "tortoise-orm",
        "no longer takes the current context from tortoise.context._current_context",
        "tortoise_context",
    )
    assert get_current_context() is before, "resetting the variable restores the context"


async def test_tortoise_context_variable_routes_queries_per_task() -> None:
    """Two contexts made current at once in two tasks: each task's queries reach its own."""
    from tortoise.context import TortoiseContext
    from tortoise.transactions import in_transaction

    variable = current_context_variable()
    answers: dict[str, str] = {}
    # The store's own app label and connection name: Tortoise records both on the model
    # classes, for every context, so anything else would disturb later stores.
    connection_name = Store("sqlite://:memory:").connection_name

    async def use(name: str) -> None:
        context = TortoiseContext()
        token = variable.set(context)
        try:
            config = {
                "connections": {connection_name: "sqlite://:memory:"},
                "apps": {APP: {"models": [models.__name__], "default_connection": connection_name}},
            }
            await context.init(config=config)
            await anyio.sleep(0.01)  # the other task has set the variable meanwhile
            async with in_transaction(connection_name) as connection:
                await connection.execute_script("CREATE TABLE IF NOT EXISTS mark (name TEXT)")
                await connection.execute_query("INSERT INTO mark VALUES (?)", [name])
                rows = await connection.execute_query_dict("SELECT name FROM mark")
            answers[name] = ",".join(row["name"] for row in rows)
        except Exception as exc:
            answers[name] = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await context.close_connections()
            variable.reset(token)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(use, "one")
            tg.start_soon(use, "two")
    assert answers == {"one": "one", "two": "two"}, broken(
        "tortoise-orm",
        "no longer looks connections up in the context set through _current_context",
        "tortoise_context",
    )


async def test_tortoise_transaction_whose_begin_fails_leaves_the_task_and_pool_usable(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BEGIN`` fails more often than the PostgreSQL pool has connections (5): each
    failed start must give back its connection (or SQLite's lock) and reset the task's
    current connection, or the next transaction waits for ever or runs on the dead one."""
    from tortoise.backends.asyncpg.client import TransactionWrapper
    from tortoise.backends.sqlite.client import SqliteTransactionWrapper

    wrapper: Any = TransactionWrapper if any_store.dialect.postgres else SqliteTransactionWrapper
    original = wrapper.begin
    failures = 8

    async def begin(self: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("BEGIN failed")
        await original(self)

    monkeypatch.setattr(wrapper, "begin", begin)
    with any_store.active():
        for _ in range(failures):
            with pytest.raises(ConnectionError), anyio.fail_after(5):
                async with compat.tortoise_transaction(any_store.connection_name):
                    pass
        current = type(any_store.connection).__name__
        assert "Transaction" not in current, broken(
            "tortoise-orm",
            f"leaves a transaction that failed to begin current ({current})",
            "tortoise_transaction",
        )
        try:
            with anyio.fail_after(5):
                async with compat.tortoise_transaction(any_store.connection_name) as connection:
                    await connection.execute_query("SELECT 1")
        except TimeoutError:
            pytest.fail(
                broken(
                    "tortoise-orm",
                    "keeps the connection (or lock) of a transaction that failed to begin",
                    "tortoise_transaction",
                )
            )


def test_tortoise_init_creates_no_database_unless_asked() -> None:
    """``Store.open`` calls ``TortoiseContext.init`` without the private ``_create_db``."""
    from tortoise.context import TortoiseContext

    parameter = inspect.signature(TortoiseContext.init).parameters.get("_create_db")
    assert parameter is None or parameter.default is False, (
        f"tortoise-orm {version('tortoise-orm')} creates databases in TortoiseContext.init"
        " by default: Store.open must pass _create_db=False (and compat.py say why)"
    )


# -- Quart: Websocket._send ----------------------------------------------------------------


async def test_quart_websocket_has_the_inner_send_the_stream_writes_through() -> None:
    from quart import Quart, websocket

    app = Quart(__name__)
    found: dict[str, Any] = {}

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        send = compat.quart_websocket_send(websocket)
        found["public"] = send == websocket.send
        try:
            inspect.signature(send).bind("text")
        except (TypeError, ValueError) as exc:
            found["signature"] = str(exc)
            return
        await send("text")
        await send(b"bytes")
        await websocket.receive()

    with anyio.fail_after(10):
        async with app.test_client().websocket("/ws") as client:
            received = [await client.receive(), await client.receive()]
            await client.send("done")
    assert found.get("public") is False, broken(
        "Quart", "has no Websocket._send", "quart_websocket_send"
    )
    assert "signature" not in found, broken(
        "Quart",
        f"has a Websocket._send that takes no data ({found.get('signature')})",
        "quart_websocket_send",
    )
    assert received == ["text", b"bytes"], broken(
        "Quart", f"Websocket._send delivered {received!r}", "quart_websocket_send"
    )


# -- hypercorn: Handshake.accept -----------------------------------------------------------

OFFER = b"permessage-deflate; client_max_window_bits"


def handshake() -> Any:
    """A hypercorn handshake for a client that offers permessage-deflate."""
    from hypercorn.protocol.ws_stream import Handshake

    return Handshake(
        [
            (b"connection", b"Upgrade"),
            (b"upgrade", b"websocket"),
            (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
            (b"sec-websocket-version", b"13"),
            (b"sec-websocket-extensions", OFFER),
        ],
        "1.1",
    )


@pytest.fixture
def deflate() -> Iterator[None]:
    """Put hypercorn's own handshake back after the test."""
    try:
        yield
    finally:
        compat.hypercorn_permessage_deflate(True)


def test_hypercorn_handshake_accept_has_the_shape_the_patch_wraps(deflate: None) -> None:
    from hypercorn.protocol.ws_stream import Handshake

    compat.hypercorn_permessage_deflate(True)
    parameters = list(inspect.signature(Handshake.accept).parameters)
    assert parameters == ["self", "subprotocol", "additional_headers"], broken(
        "hypercorn",
        f"has Handshake.accept{tuple(parameters)}",
        "hypercorn_permessage_deflate",
    )
    assert handshake().extensions == [OFFER.decode()], broken(
        "hypercorn",
        "no longer keeps the client's offer in Handshake.extensions",
        "hypercorn_permessage_deflate",
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_hypercorn_patch_decides_whether_frames_are_compressed(
    deflate: None, enabled: bool
) -> None:
    from wsproto.events import TextMessage

    compat.hypercorn_permessage_deflate(not enabled)
    compat.hypercorn_permessage_deflate(enabled)  # switching again must not stack wrappers
    status, headers, connection = handshake().accept(None, [])
    assert status == 101
    answer = dict(headers).get(b"sec-websocket-extensions")
    frame = connection.send(TextMessage(data="metrics " * 64))
    compressed = bool(frame[0] & 0x40)  # RSV1: the frame is deflated
    assert (answer is not None, compressed) == (enabled, enabled), broken(
        "hypercorn",
        f"answered {answer!r} and sent a {'compressed' if compressed else 'plain'} frame"
        f" with compression {'on' if enabled else 'off'}",
        "hypercorn_permessage_deflate",
    )


# -- quart-schema: OpenAPIProvider.schema ----------------------------------------------------


async def test_quart_schema_serves_the_wrapped_provider_schema() -> None:
    from quart import Quart
    from quart_schema import QuartSchema

    app = Quart(__name__)
    extension = QuartSchema(app, openapi_path="/openapi.json")

    @app.get("/thing")
    async def thing() -> str:
        return "thing"

    document = extension.openapi_provider.schema()
    assert isinstance(document, dict) and "/thing" in document.get("paths", {}), broken(
        "quart-schema",
        "has an openapi_provider.schema() that does not return the OpenAPI document",
        "wrap_openapi_schema",
    )
    calls: list[int] = []

    def complete(document: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        document["x-completed"] = len(calls)
        return document

    compat.wrap_openapi_schema(extension, complete)
    compat.wrap_openapi_schema(extension, complete)  # once per provider
    client = app.test_client()
    served = [await (await client.get("/openapi.json")).get_json() for _ in range(2)]
    assert [d.get("x-completed") for d in served] == [1, 2], broken(
        "quart-schema",
        "no longer serves openapi.json from openapi_provider.schema() on each request",
        "wrap_openapi_schema",
    )
