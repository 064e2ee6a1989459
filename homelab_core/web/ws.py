"""``/ws/metrics``: the live stream of the hub's events to WebSocket clients.

:class:`MetricStream` reads the hub's bus, numbers every event (``seq``), encodes it once,
keeps it in a bounded replay buffer and offers it to every client's bounded queue without
waiting. Each client has its own sender task, so a stalled client only loses its own
events (and is told so with ``lagged``). The messages live in
:mod:`~homelab_core.web.ws_protocol`, a client's queue in :mod:`~homelab_core.web.ws_client`;
``docs/websocket.md`` describes the protocol.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from quart import Blueprint, websocket

from .. import compat
from ..codec import to_builtins
from . import ws_protocol as p
from .auth import bearer, needs_token, token_matches
from .errors import ApiError
from .ws_client import Client, Close, Connection
from .ws_replay import Replay

if TYPE_CHECKING:
    from ..bus import Subscription
    from ..config import ServerSettings
    from ..events import Event
    from ..hub import Hub
    from .extension import HomelabWeb

log = logging.getLogger("homelab.web.ws")

#: Events handled between two checkpoints of the broadcaster, so that senders can run.
_BATCH = 64
#: Messages a sender writes in a row before it lets other tasks run.
_SEND_BATCH = 16


class MetricStream:
    """Fans the hub's events out to WebSocket clients.

    :param heartbeat: seconds without traffic after which a client gets a ``heartbeat``.
    :param queue_size: messages a client may have waiting before its events are dropped.
    :param replay_size: events kept for clients that resume with ``since``.
    :param bus_buffer: events the bus may hold for the broadcaster (bursts).
    :param auth_timeout: seconds a client has to authenticate when a token is required.
    :param close_timeout: seconds a closing client has to take its close frame.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        heartbeat: float = 20.0,
        queue_size: int = 1024,
        replay_size: int = 10_000,
        bus_buffer: int = 65_536,
        auth_timeout: float = 10.0,
        close_timeout: float = 2.0,
    ) -> None:
        if queue_size < 2 or replay_size < 1 or bus_buffer < 1:
            raise ValueError("queue_size must be at least 2, replay and bus buffers at least 1")
        if min(heartbeat, auth_timeout, close_timeout) <= 0:
            raise ValueError("heartbeat, auth_timeout and close_timeout must be positive")
        self.hub = hub
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.bus_buffer = bus_buffer
        self.auth_timeout = auth_timeout
        self.close_timeout = close_timeout
        #: The sequence numbers and the events kept for clients that resume.
        self.replay = Replay(replay_size)
        #: Events the broadcaster lost because the bus buffer overflowed.
        self.lost = 0
        #: Events dropped for slow clients, summed over clients.
        self.dropped = 0
        self._clients: set[Client] = set()
        self._closing = False
        self._all_gone: anyio.Event | None = None

    @property
    def id(self) -> str:
        """Identifies this run of the stream: sequence numbers restart with it."""
        return self.replay.id

    @property
    def seq(self) -> int:
        """The last sequence number assigned."""
        return self.replay.seq

    @property
    def clients(self) -> int:
        """How many WebSocket clients are connected."""
        return len(self._clients)

    # -- the broadcaster ---------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MetricStream]:
        """Run the broadcaster while the block runs; close every client when it ends."""
        async with anyio.create_task_group() as tg:
            await tg.start(self._broadcast, name="homelab:ws-broadcast")
            tg.start_soon(self._beat, name="homelab:ws-heartbeat")
            try:
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.close_clients()
                tg.cancel_scope.cancel()

    async def _broadcast(self, *, task_status: TaskStatus[None]) -> None:
        async with self.hub.subscribe(buffer=self.bus_buffer) as sub:
            task_status.started()
            while True:
                self._publish(await sub.receive())
                await self._drain(sub)

    async def _drain(self, sub: Subscription) -> None:
        """Publish what the bus buffered, letting the senders run now and then.

        Events the bus drops arrive while its buffer is full, after everything buffered:
        once drops are counted, the buffer is emptied without a checkpoint and the gap
        placed after it.
        """
        count = 0
        while True:
            try:
                event = sub.receive_nowait()
            except anyio.WouldBlock:
                break
            self._publish(event)
            count += 1
            if count % _BATCH == 0 and not sub.missed:
                await anyio.lowlevel.checkpoint()
        self._lose(sub.take_missed())

    def _publish(self, event: Event) -> None:
        """Number, encode, remember and offer one event to every client; never waits."""
        replay = self.replay
        try:
            frame = p.make_frame(
                replay.seq + 1, event.type, event.instance_id, event.timestamp, p.event_data(event)
            )
        except Exception:
            log.exception("skipped an event that cannot be encoded as JSON: %r", event)
            return
        replay.record(frame)
        rendered: dict[p.Filter, str | None] = {}
        for client in self._clients:
            if not client.active:
                continue
            client.synced = frame.seq
            if client.filter is p.EVERYTHING:
                text: str | None = frame.text
            elif client.filter in rendered:
                text = rendered[client.filter]
            else:
                text = rendered[client.filter] = client.filter.render(frame)
            if text is not None and not client.offer(frame.seq, text):
                self.dropped += 1

    def _lose(self, count: int) -> None:
        """Account for events the bus dropped: they take sequence numbers nobody can replay."""
        if not count:
            return
        log.warning("the WebSocket stream fell behind and lost %d events", count)
        self.lost += count
        self.replay.skip(count)
        seq = self.replay.seq
        for client in self._clients:
            if client.active:
                client.missed += count
                client.last_missed = client.synced = seq

    async def close_clients(self) -> None:
        """Close every connection (1001) and refuse new ones; wait for them, within bounds."""
        self._closing = True
        for client in self._clients:
            client.close(p.CLOSE_GOING_AWAY, "server shutting down", now=True)
        if self._clients:
            self._all_gone = anyio.Event()
            with anyio.move_on_after(self.close_timeout):
                await self._all_gone.wait()
        for client in self._clients:
            if client.scope is not None:
                client.scope.cancel()

    # -- one connection ----------------------------------------------------------------

    async def serve(
        self, conn: Connection, *, server: ServerSettings, authorization: str | None = None
    ) -> None:
        """Speak the protocol on an accepted connection until either side closes it.

        ``server`` says whether a token is needed; ``authorization`` is the upgrade
        request's ``Authorization`` header, if any.
        """
        required = needs_token(server, write=False)
        presented = bearer(authorization)
        authorized = not required or token_matches(server, presented)
        client = Client(self.queue_size, authorized=authorized, synced=self.seq)
        client.outbox.put(
            p.hello(
                seq=self.seq,
                heartbeat=self.heartbeat,
                auth_required=not authorized,
                stream=self.id,
            )
        )
        if presented is not None and not authorized:
            client.outbox.put(p.error("forbidden", "the bearer token is not valid"))
            client.close(p.CLOSE_FORBIDDEN, "forbidden")
        elif self._closing:
            client.close(p.CLOSE_GOING_AWAY, "server shutting down")
        self._clients.add(client)
        # The sender is a bare asyncio task and the reader runs in a cancel scope of its
        # own, not both in a task group: a group costs some 25 objects per connection
        # (a tenth of one), which every full garbage collection walks.
        sender = asyncio.get_running_loop().create_task(
            self._send(client, conn), name="homelab:ws-send"
        )
        try:
            with anyio.CancelScope() as client.scope:
                await self._read(client, conn, server)
                # Closing: give the sender a moment to deliver the close frame.
                await anyio.sleep(self.close_timeout)
        finally:
            sender.cancel()
            self._clients.discard(client)
            if not self._clients and self._all_gone is not None:
                self._all_gone.set()

    async def _send(self, client: Client, conn: Connection) -> None:
        """Write the client's messages as they come; the hot loop of the broadcast.

        Every event wakes every client's sender, so what it does per message counts a
        thousandfold: no anyio call (clock, event) and no yield when nothing waits (see
        :class:`QuartConnection`). With those and the outbox's bare futures, the server's
        CPU at 1,000 clients and 10 events/s went from 34 % to 20 % of a core, below a
        bare Quart broadcast loop's 28 % (``bench/websocket_fanout.py``).
        """
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
                    if in_a_row % _SEND_BATCH == 0:
                        await asyncio.sleep(0)
                    item = outbox.get_nowait()
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

    async def _beat(self) -> None:
        """Queue a heartbeat for every client that was sent nothing for ``heartbeat`` s.

        One task checks every client a few times per period: cheaper than a timer per
        client armed at each message.
        """
        tick = min(1.0, self.heartbeat / 4)
        while True:
            await anyio.sleep(tick)
            now = time.monotonic()
            for client in self._clients:
                if not client.outbox and now - client.last_sent >= self.heartbeat:
                    client.outbox.put(p.heartbeat(seq=client.synced))
                    client.last_sent = now

    async def _read(self, client: Client, conn: Connection, server: ServerSettings) -> None:
        """Handle the client's messages until it is closing."""
        if client.authorized:
            await self._read_messages(client, conn, server, None)
            return
        deadline = anyio.current_time() + self.auth_timeout
        with anyio.CancelScope(deadline=deadline) as auth_scope:
            await self._read_messages(client, conn, server, auth_scope)
        if auth_scope.cancelled_caught:
            client.close(p.CLOSE_UNAUTHORIZED, "no auth message in time")

    async def _read_messages(
        self,
        client: Client,
        conn: Connection,
        server: ServerSettings,
        auth_scope: anyio.CancelScope | None,
    ) -> None:
        while not client.closing:
            raw = await conn.receive()
            await client.outbox.wait_for_room()
            try:
                await self._handle(client, p.parse_message(raw), server)
            except p.ProtocolError as exc:
                client.outbox.put(p.error(exc.code, exc.message))
            except Exception:
                log.exception("unexpected error while handling a WebSocket message")
                client.outbox.put(p.error("internal_error", "internal error; see the log"))
            if auth_scope is not None and client.authorized:
                auth_scope.deadline = math.inf

    async def _handle(self, client: Client, message: p.Message, server: ServerSettings) -> None:
        if isinstance(message, p.Auth):
            if needs_token(server, write=False) and not token_matches(server, message.token):
                client.outbox.put(p.error("forbidden", "the token is not valid"))
                client.close(p.CLOSE_FORBIDDEN, "forbidden")
                return
            client.synced = self.seq
            client.authorized = True
            client.outbox.put(p.authenticated(seq=self.seq))
        elif not client.authorized:
            raise p.ProtocolError("unauthorized", 'send {"type": "auth", "token": ...} first')
        elif isinstance(message, p.Ping):
            client.outbox.put(p.PONG)
        else:
            await self._subscribe(client, message)

    # -- subscriptions -----------------------------------------------------------------

    async def _subscribe(self, client: Client, message: p.Subscribe) -> None:
        """Answer with a snapshot, then replay what followed it; nothing missed or repeated."""
        instances = self.hub.instances()
        known = {info.id for info in instances}
        unknown = sorted((message.plugins or frozenset()) - known)
        if unknown:
            raise p.ProtocolError(
                "unknown_plugin",
                f"no plugin instance {', '.join(map(repr, unknown))};"
                f" known: {', '.join(sorted(known)) or 'none'}",
            )
        wanted = p.Filter(message.plugins, message.metrics)
        since = message.since
        resumed = since is not None and self.replay.resumable(since, message.stream)
        if since is not None and resumed:
            seq, plugins = since, {}
        else:
            client.paused = True
            try:
                seq = self.seq
                plugins = await self._current(wanted, [i.id for i in instances])
            finally:
                client.paused = False
        client.filter = p.EVERYTHING if wanted == p.EVERYTHING else wanted
        client.missed = 0
        client.outbox.put(p.snapshot(seq=seq, resumed=resumed, plugins=plugins))
        floor = self.replay.floor
        if floor > seq:  # a burst evicted events while the snapshot was read
            client.outbox.put(p.lagged(missed=floor - seq, seq=floor))
        client.outbox.put(*self.replay.after(seq, wanted))
        client.synced = self.seq

    async def _current(self, wanted: p.Filter, ids: list[str]) -> dict[str, Any]:
        """The snapshot's ``plugins``: health and latest metrics of the wanted instances.

        Read while the client is paused, after its ``seq`` was taken: the values may
        already include some events numbered after it, which the client then receives
        again. Metrics and status carry whole values, so applying them twice is harmless.
        """
        plugins: dict[str, Any] = {}
        for instance_id in filter(wanted.wants_plugin, ids):
            metrics = to_builtins(await self.hub.latest(instance_id))
            plugins[instance_id] = {
                "status": to_builtins(self.hub.health(instance_id)),
                "metrics": wanted.select(metrics),
            }
        return plugins


def add_websocket(blueprint: Blueprint, web: HomelabWeb) -> None:
    """Register ``/ws/metrics`` on the blueprint."""

    @blueprint.websocket("/ws/metrics")
    async def ws_metrics() -> None:
        """The live stream of metrics, status, executions and plugin changes."""
        stream = web.stream
        if stream is None:
            raise ApiError(503, "unavailable", "the live stream is not running")
        await websocket.accept()
        await stream.serve(
            QuartConnection(websocket),
            server=web.settings.server,
            authorization=websocket.headers.get("Authorization"),
        )


class QuartConnection:
    """Quart's websocket for the stream, with a cheaper ``send``.

    ``Websocket.send`` yields to the event loop (``sleep(0)``) and builds a headers object
    for an accept that already happened, before every message: a loop turn and a few
    objects per message and client. The stream's sender yields by itself (every
    ``_SEND_BATCH`` messages in a row), so it writes through the function
    ``Websocket.send`` ends in (:func:`~homelab_core.compat.quart_websocket_send`). Takes
    the object or the ``quart.websocket`` proxy: its methods are looked up once, here.
    """

    __slots__ = ("close", "receive", "send")

    def __init__(self, ws: Any) -> None:
        self.send = compat.quart_websocket_send(ws)
        self.receive = ws.receive
        self.close = ws.close
