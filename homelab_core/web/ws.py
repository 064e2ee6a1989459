"""``/ws/metrics``: the live stream of the hub's events to WebSocket clients.

:class:`MetricStream` reads the hub's bus, numbers every event (``seq``), encodes it once,
keeps it in a bounded replay buffer and offers it to every client's bounded queue without
waiting. Each client has its own sender task, so a stalled client only loses its own
events (and is told so with ``lagged``). The messages live in
:mod:`~homelab_core.web.ws_protocol`, the numbering and replay buffer in
:mod:`~homelab_core.web.ws_replay`, one connection's conversation in
:mod:`~homelab_core.web.ws_session` and a client's queue in
:mod:`~homelab_core.web.ws_client`; ``docs/websocket.md`` describes the protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from quart import Blueprint, websocket

from .. import compat
from ..config import WEBSOCKET_QUEUE_BYTES, WEBSOCKET_REPLAY_BYTES
from . import ws_protocol as p
from .errors import ApiError
from .ws_client import Client, Connection
from .ws_replay import Replay
from .ws_session import Session

if TYPE_CHECKING:
    from ..bus import Subscription
    from ..config import ServerSettings
    from ..events import Event
    from ..hub import Hub
    from .extension import HomelabWeb

log = logging.getLogger("homelab.web.ws")

#: Events handled between two checkpoints of the broadcaster, so that senders can run.
_BATCH = 64


class MetricStream:
    """Fans the hub's events out to WebSocket clients.

    :param heartbeat: seconds without traffic after which a client gets a ``heartbeat``.
    :param queue_size: messages a client may have waiting before its events are dropped.
    :param queue_bytes: memory those messages may take before its events are dropped.
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
        queue_bytes: int = WEBSOCKET_QUEUE_BYTES,
        replay_size: int = 10_000,
        replay_bytes: int = WEBSOCKET_REPLAY_BYTES,
        bus_buffer: int = 65_536,
        auth_timeout: float = 10.0,
        close_timeout: float = 2.0,
    ) -> None:
        if queue_size < 2 or min(queue_bytes, replay_size, replay_bytes, bus_buffer) < 1:
            raise ValueError(
                "queue_size must be at least 2; queue_bytes, replay_size, replay_bytes and"
                " bus_buffer at least 1"
            )
        if min(heartbeat, auth_timeout, close_timeout) <= 0:
            raise ValueError("heartbeat, auth_timeout and close_timeout must be positive")
        self.hub = hub
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.bus_buffer = bus_buffer
        self.auth_timeout = auth_timeout
        self.close_timeout = close_timeout
        #: The sequence numbers and the events kept for clients that resume.
        self.replay = Replay(replay_size, replay_bytes)
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

    # -- the connections ---------------------------------------------------------------

    async def serve(
        self, conn: Connection, *, server: ServerSettings, authorization: str | None = None
    ) -> None:
        """Speak the protocol on an accepted connection until either side closes it.

        ``server`` says whether a token is needed; ``authorization`` is the upgrade
        request's ``Authorization`` header, if any.
        """
        session = Session(self, conn, server, authorization)
        client = session.client
        if self._closing:  # a client closed for a wrong token keeps its close reason
            client.close(p.CLOSE_GOING_AWAY, "server shutting down")
        self._clients.add(client)
        try:
            await session.run()
        finally:
            self._clients.discard(client)
            if not self._clients and self._all_gone is not None:
                self._all_gone.set()


def add_websocket(blueprint: Blueprint, web: HomelabWeb) -> None:
    """Register ``/ws/metrics`` on the blueprint."""

    @blueprint.websocket("/ws/metrics")
    async def ws_metrics() -> None:
        """The live stream of metrics, status, executions and plugin changes."""
        headers = websocket.headers
        if web.host_check is not None:
            web.check_host(headers.get("Host"))
        # A page of another site must not read the stream; programs send no Origin.
        web.check_origin(headers.get("Origin"), headers.get("Host"))
        stream = web.stream
        if stream is None:
            raise ApiError(503, "unavailable", "the live stream is not running")
        await websocket.accept()
        await stream.serve(
            QuartConnection(websocket),
            server=web.settings.server,
            authorization=headers.get("Authorization"),
        )


class QuartConnection:
    """Quart's websocket for the stream, with a cheaper ``send``.

    ``Websocket.send`` yields to the event loop (``sleep(0)``) and builds a headers object
    for an accept that already happened, before every message: a loop turn and a few
    objects per message and client. The stream's sender yields by itself (after a few
    messages in a row, see :class:`~homelab_core.web.ws_session.Session`), so it writes
    through the function ``Websocket.send`` ends in
    (:func:`~homelab_core.compat.quart_websocket_send`). Takes the object or the
    ``quart.websocket`` proxy: its methods are looked up once, here.
    """

    __slots__ = ("close", "receive", "send")

    def __init__(self, ws: Any) -> None:
        self.send = compat.quart_websocket_send(ws)
        self.receive = ws.receive
        self.close = ws.close
