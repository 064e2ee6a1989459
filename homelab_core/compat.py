"""Every use of a dependency's private name, and every work-around of a dependency's
bug, in one place.

Each function says which private name it uses (or which bug it works around), why the
public API does not do, and the versions it was checked with. ``tests/test_compat.py``
checks each of them against the installed dependency and names the function to update
when an upgrade breaks one; the dependencies concerned have an upper version bound in
``pyproject.toml``.

Nothing here imports Quart or quart-schema (the layering rule of ``tests/test_layers.py``):
their objects come in as arguments. Tortoise and hypercorn are imported inside the
functions (anyio too), so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tortoise.backends.base.client import BaseDBAsyncClient
    from tortoise.context import TortoiseContext

#: Set on a quart-schema OpenAPI provider once :func:`wrap_openapi_schema` has wrapped it.
_WRAPPED = "_homelab_wrapped"


def tortoise_context() -> ContextVar[TortoiseContext | None]:
    """tortoise-orm's ``tortoise.context._current_context``: which context is current.

    ``Store.active`` makes the store's own ``TortoiseContext`` current for each operation
    and puts the previous one back afterwards, so an application's own Tortoise set-up is
    never disturbed. The public way, ``with context:``, keeps one reset token on the
    context object, while the store enters its context from many tasks at once (writer,
    API requests, scheduler): the second task's token replaces the first's, and leaving
    raises ``ValueError`` (token created in a different Context). Setting the variable
    gives each entry its own token.

    Checked with tortoise-orm 1.1.9.
    """
    from tortoise.context import _current_context

    return _current_context


@contextlib.asynccontextmanager
async def tortoise_transaction(connection_name: str) -> AsyncIterator[BaseDBAsyncClient]:
    """``tortoise.transactions.in_transaction(connection_name)``, cleaned up when it
    fails to start.

    Tortoise's transaction contexts make the transaction's connection current for the
    task and take a pooled connection (PostgreSQL) or the connection's lock (SQLite)
    before ``BEGIN``; when ``BEGIN`` fails (the server went away while the pool still
    held its connection), ``__aenter__`` raises without undoing either. The task's
    queries then all go to the dead transaction ("connection has been released back to
    the pool") for as long as the task lives, and the pool has one connection less, until
    it has none and every acquire waits for ever: the writer never recovered from a
    PostgreSQL restart. This calls the context's own ``__aexit__`` when ``__aenter__``
    fails, which puts the connection back and resets the task's current connection, and
    ignores what that cleanup raises (a rollback of a transaction never begun).

    Checked with tortoise-orm 1.1.9.
    """
    import anyio
    from tortoise.transactions import in_transaction

    context = in_transaction(connection_name)
    try:
        connection = await context.__aenter__()
    except BaseException as exc:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await context.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_exit(context)
        yield connection


def quart_websocket_send(websocket: Any) -> Callable[[str | bytes], Coroutine[Any, Any, None]]:
    """The function Quart's ``Websocket.send`` ends in: its private ``_send`` attribute.

    ``Websocket.send`` awaits ``sleep(0)`` and ``accept()`` (which builds a headers object
    for an accept that already happened) before every message: a loop turn and a few
    objects per message and client. The stream's sender yields by itself and accepts
    once, so it writes through ``_send`` (the ASGI ``websocket.send`` partial Quart gives
    the object). Only for a websocket already accepted. Takes the ``quart.websocket``
    proxy or the object behind it; the public ``send`` if a Quart lacks ``_send``.

    Checked with Quart 0.22.0 and 0.23.1.
    """
    send = getattr(websocket, "_send", None)
    if callable(send):
        return send  # type: ignore[no-any-return]
    return websocket.send  # type: ignore[no-any-return]


def hypercorn_permessage_deflate(enabled: bool) -> None:
    """Whether hypercorn's WebSocket handshake accepts a permessage-deflate offer.

    Hypercorn has no setting for it: ``hypercorn.protocol.ws_stream.Handshake.accept``
    (not public API) always accepts what the client offers. Disabled, this replaces that
    method, for the whole process, by one that first clears ``self.extensions`` (the
    offer, parsed from the request headers in ``Handshake.__init__``), as if the client
    had offered nothing. The original stays on the class (``_homelab_accept``), so
    switching back and forth never stacks wrappers; enabled puts it back.

    Checked with hypercorn 0.18.0 (and, by reading its source, 0.17.3).
    """
    from hypercorn.protocol import ws_stream

    handshake = ws_stream.Handshake
    original = handshake.__dict__.get("_homelab_accept", handshake.accept)
    handshake._homelab_accept = original  # type: ignore[attr-defined]
    if enabled:
        handshake.accept = original  # type: ignore[method-assign]
        return

    def accept(self: Any, subprotocol: str | None, additional_headers: Any) -> Any:
        self.extensions = None  # as if the client had offered no extension
        return original(self, subprotocol, additional_headers)

    handshake.accept = accept  # type: ignore[method-assign]


def wrap_openapi_schema(
    schema_extension: Any, complete: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    """Pass quart-schema's OpenAPI document through ``complete``, once per extension.

    quart-schema builds the document with ``schema_extension.openapi_provider.schema()``
    each time it serves it. Its public way to change the document is a provider class of
    one's own (``QuartSchema(openapi_provider_class=...)``), which only works for an app
    whose ``QuartSchema`` we create; an application that embeds the web layer may have
    created its own. So this replaces ``schema`` on the provider instance and marks the
    provider (``_homelab_wrapped``) so that a second call does not wrap it again.

    Checked with quart-schema 0.25.0 (and, by reading its source, 0.22.0).
    """
    provider = schema_extension.openapi_provider
    if getattr(provider, _WRAPPED, False):
        return
    build: Callable[[], dict[str, Any]] = provider.schema

    def schema() -> dict[str, Any]:
        return complete(build())

    provider.schema = schema
    setattr(provider, _WRAPPED, True)
