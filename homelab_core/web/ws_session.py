"""One ``/ws/metrics`` connection's conversation with the stream.

A :class:`Session` greets the client, checks its token, answers its messages (``auth``,
``subscribe``, ``ping``) and writes its queue to the socket, while the broadcaster in
:mod:`~homelab_core.web.ws` offers it events; ``docs/websocket.md`` describes the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import anyio

from ..codec import to_builtins
from . import ws_protocol as p
from .auth import bearer, needs_token, token_matches
from .ws_client import Client, Close, Connection

if TYPE_CHECKING:
    from ..config import ServerSettings
    from .ws import MetricStream

log = logging.getLogger("homelab.web.ws")

#: Messages a sender writes in a row before it lets other tasks run.
_IN_A_ROW = 16


class Session:
    """One accepted connection: its :class:`Client`, its reader and its sender.

    Made by :meth:`MetricStream.serve <homelab_core.web.ws.MetricStream.serve>`, which
    lets the broadcaster offer events to :attr:`client` while :meth:`run` runs. Reaches
    the hub and the replay buffer through the stream.
    """

    __slots__ = ("batch_due", "client", "conn", "server", "stream")

    def __init__(
        self,
        stream: MetricStream,
        conn: Connection,
        server: ServerSettings,
        authorization: str | None,
    ) -> None:
        """Queue the ``hello``; with a wrong bearer token, a ``forbidden`` and the close.

        ``server`` says whether a token is needed; ``authorization`` is the upgrade
        request's ``Authorization`` header, if any.
        """
        self.stream = stream
        self.conn = conn
        self.server = server
        #: When a batching client may be sent its next message (``time.monotonic()``).
        self.batch_due = 0.0
        required = needs_token(server, write=False)
        presented = bearer(authorization)
        authorized = not required or token_matches(server, presented)
        seq = stream.replay.seq
        self.client = client = Client(
            stream.queue_size, authorized=authorized, synced=seq, queue_bytes=stream.queue_bytes
        )
        client.outbox.put(
            p.hello(
                seq=seq,
                heartbeat=stream.heartbeat,
                auth_required=not authorized,
                stream=stream.replay.id,
            )
        )
        if presented is not None and not authorized:
            client.outbox.put(p.error("forbidden", "the bearer token is not valid"))
            client.close(p.CLOSE_FORBIDDEN, "forbidden")

    async def run(self) -> None:
        """Read and write until either side closes the connection."""
        client = self.client
        # The sender is a bare asyncio task and the reader runs in a cancel scope of its
        # own, not both in a task group: a group adds a good share of a connection's
        # objects, which every full garbage collection walks (see docs/performance.md).
        sender = asyncio.get_running_loop().create_task(self._send(), name="homelab:ws-send")
        try:
            with anyio.CancelScope() as client.scope:
                await self._read()
                # Closing: give the sender a moment to deliver the close frame.
                await anyio.sleep(self.stream.close_timeout)
        finally:
            sender.cancel()

    async def _send(self) -> None:
        """Write the client's messages as they come; the hot loop of the broadcast.

        Every event wakes every client's sender, so what it does per message is paid
        once per client for every event: no anyio call (clock, event) and no yield when
        nothing waits (see :class:`~homelab_core.web.ws.QuartConnection`). Those and the
        outbox's bare futures brought the server's CPU below a bare Quart broadcast
        loop's (``bench/websocket_fanout.py``; figures in docs/performance.md).
        """
        client, conn = self.client, self.conn
        outbox, send = client.outbox, conn.send
        in_a_row = 0
        try:
            while True:
                client.flush_lag(room=1)
                if not outbox:
                    in_a_row = 0
                    item = await outbox.get()
                else:
                    # The send may not wait: let others run now and then (a replay, a burst).
                    in_a_row += 1
                    if in_a_row % _IN_A_ROW == 0:
                        await asyncio.sleep(0)
                    item = outbox.get_nowait()
                if type(item) is str and client.batch:
                    end = await self._send_batch(item)
                    if end is None:
                        continue
                    item = end
                if isinstance(item, Close):
                    await conn.close(item.code, item.reason)
                    return
                await send(item)
                client.last_sent = time.monotonic()
        except Exception as exc:
            log.debug("WebSocket send failed, dropping the client: %r", exc)
        finally:
            if client.scope is not None:
                client.scope.cancel()

    async def _send_batch(self, first: str) -> Close | None:
        """Send ``first`` and what arrived with it as one message, ``client.batch`` s apart.

        A browser pays for every frame: a page that follows hundreds of instances asks for
        batches and takes a few frames a second instead of hundreds. The first message
        after a quiet spell (a snapshot, a lone event) goes at once; the ones that follow
        within ``batch`` s wait for the next frame. Returns the :class:`Close` that ended
        the gathering, for the caller to carry out.
        """
        client, outbox = self.client, self.client.outbox
        wait = self.batch_due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        texts, size = [first], len(first)
        end: Close | None = None
        while outbox:
            client.flush_lag(room=1)
            item = outbox.get_nowait()
            if isinstance(item, Close):
                end = item
                break
            if len(texts) >= p.BATCH_MESSAGES or size + len(item) > p.BATCH_BYTES:
                await self._write(texts)
                texts, size = [], 0
            texts.append(item)
            size += len(item)
        await self._write(texts)
        self.batch_due = time.monotonic() + client.batch
        return end

    async def _write(self, texts: list[str]) -> None:
        await self.conn.send(texts[0] if len(texts) == 1 else p.batch(texts))
        self.client.last_sent = time.monotonic()

    async def _read(self) -> None:
        """Handle the client's messages until it is closing."""
        client = self.client
        if client.authorized:
            await self._read_messages(None)
            return
        deadline = anyio.current_time() + self.stream.auth_timeout
        with anyio.CancelScope(deadline=deadline) as auth_scope:
            await self._read_messages(auth_scope)
        if auth_scope.cancelled_caught:
            client.close(p.CLOSE_UNAUTHORIZED, "no auth message in time")

    async def _read_messages(self, auth_scope: anyio.CancelScope | None) -> None:
        client, conn = self.client, self.conn
        while not client.closing:
            raw = await conn.receive()
            await client.outbox.wait_for_room()
            try:
                await self._handle(p.parse_message(raw))
            except p.ProtocolError as exc:
                client.outbox.put(p.error(exc.code, exc.message))
            except Exception:
                log.exception("unexpected error while handling a WebSocket message")
                client.outbox.put(p.error("internal_error", "internal error; see the log"))
            if auth_scope is not None and client.authorized:
                auth_scope.deadline = math.inf

    async def _handle(self, message: p.Message) -> None:
        client = self.client
        if isinstance(message, p.Auth):
            server = self.server
            if needs_token(server, write=False) and not token_matches(server, message.token):
                client.outbox.put(p.error("forbidden", "the token is not valid"))
                client.close(p.CLOSE_FORBIDDEN, "forbidden")
                return
            seq = self.stream.replay.seq
            client.synced = seq
            client.authorized = True
            client.outbox.put(p.authenticated(seq=seq))
        elif not client.authorized:
            raise p.ProtocolError("unauthorized", 'send {"type": "auth", "token": ...} first')
        elif isinstance(message, p.Ping):
            client.outbox.put(p.PONG)
        else:
            await self._subscribe(message)

    # -- subscriptions -----------------------------------------------------------------

    async def _subscribe(self, message: p.Subscribe) -> None:
        """Answer with a snapshot, then replay what followed it; nothing missed or repeated."""
        client, replay = self.client, self.stream.replay
        instances = self.stream.hub.instances()
        known = {info.id for info in instances}
        unknown = sorted((message.plugins or frozenset()) - known)
        if unknown:
            raise p.ProtocolError(
                "unknown_plugin",
                f"no plugin instance {', '.join(map(repr, unknown))};"
                f" known: {', '.join(sorted(known)) or 'none'}",
            )
        wanted = p.Filter(message.plugins, message.metrics, message.types)
        since = message.since
        resumed = since is not None and replay.resumable(since, message.stream)
        if since is not None and resumed:
            seq, plugins = since, {}
        else:
            client.paused = True
            try:
                seq = replay.seq
                plugins = await self._current(wanted, [i.id for i in instances])
            finally:
                client.paused = False
        client.filter = p.EVERYTHING if wanted == p.EVERYTHING else wanted
        client.batch = message.batch
        client.missed = 0
        client.outbox.put(p.snapshot(seq=seq, resumed=resumed, plugins=plugins))
        if replay.floor > seq:  # a burst evicted events while the snapshot was read
            client.outbox.put(p.lagged(missed=replay.floor - seq, seq=replay.floor))
        client.outbox.put(*replay.after(seq, wanted))
        client.synced = replay.seq

    async def _current(self, wanted: p.Filter, ids: list[str]) -> dict[str, Any]:
        """The snapshot's ``plugins``: health and latest metrics of the wanted instances.

        Read while the client is paused, after its ``seq`` was taken: the values may
        already include some events numbered after it, which the client then receives
        again. Metrics and status carry whole values, so applying them twice is harmless.
        """
        hub = self.stream.hub
        plugins: dict[str, Any] = {}
        for instance_id in filter(wanted.wants_plugin, ids):
            metrics = to_builtins(await hub.latest(instance_id))
            plugins[instance_id] = {
                "status": to_builtins(hub.health(instance_id)),
                "metrics": wanted.select(metrics) if wanted.wants("metrics", instance_id) else [],
            }
        return plugins
