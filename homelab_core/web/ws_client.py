"""One ``/ws/metrics`` client: its outgoing queue and what it missed.

The broadcaster offers events to a :class:`Client` without waiting; the client's sender
task takes them from its :class:`Outbox`. A full outbox drops live events for that client
alone, and the client is told how many with a ``lagged`` notice before its next event.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from typing import Protocol

import anyio
import attrs

from ..config import WEBSOCKET_QUEUE_BYTES
from . import ws_protocol as p


class Connection(Protocol):
    """The part of a WebSocket the stream uses (Quart's ``websocket`` has it)."""

    async def send(self, data: str) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int, reason: str = "") -> None: ...


@attrs.frozen
class Close:
    """Queued after a client's last message: close the socket with ``code``."""

    code: int
    reason: str


class Outbox:
    """A client's outgoing messages, in order.

    Live events are :meth:`offer`-ed and dropped when ``limit`` messages wait, or when
    the waiting messages take ``max_bytes`` (``sys.getsizeof`` of their texts) already: a
    client that reads nothing then holds at most that much, plus the one event that
    crossed it, however large the events are. Replies, snapshots and replays are
    :meth:`put` regardless; the client's reader waits for room before it handles a
    message, so only the client itself can grow its queue past the limits, and only by
    what one message asks for.

    Waiting is on bare asyncio futures (Quart, hence the stream, runs on asyncio): every
    event wakes every client's sender, and an anyio event is four objects (and as many
    calls) where a future is one.
    """

    __slots__ = ("_arrived", "_items", "_room", "bytes", "limit", "max_bytes")

    def __init__(self, limit: int, max_bytes: int = WEBSOCKET_QUEUE_BYTES) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        #: What the waiting texts take, in bytes.
        self.bytes = 0
        self._items: deque[str | Close] = deque()
        self._arrived: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """Whether ``limit`` messages, or ``max_bytes`` of them, wait."""
        return len(self._items) >= self.limit or self.bytes >= self.max_bytes

    def offer(self, item: str) -> bool:
        """Queue a live event unless the outbox is :attr:`full` (once per client and event)."""
        items = self._items
        if len(items) >= self.limit or self.bytes >= self.max_bytes:
            return False
        items.append(item)
        self.bytes += sys.getsizeof(item)
        _wake(self._arrived)
        return True

    def put(self, *items: str | Close) -> None:
        self._items.extend(items)
        for item in items:
            if type(item) is str:
                self.bytes += sys.getsizeof(item)
        _wake(self._arrived)

    def replace(self, item: Close) -> None:
        """Drop everything waiting and queue ``item`` alone."""
        self._items.clear()
        self.bytes = 0
        self.put(item)
        _wake(self._room)

    async def get(self) -> str | Close:
        """The next message, once there is one (one consumer at a time)."""
        while not self._items:
            self._arrived = asyncio.get_running_loop().create_future()
            try:
                await self._arrived
            finally:
                self._arrived = None
        return self.get_nowait()

    def get_nowait(self) -> str | Close:
        """The next message; the outbox must not be empty."""
        item = self._items.popleft()
        if type(item) is str:
            self.bytes -= sys.getsizeof(item)
        if self._room is not None and not self.full:
            _wake(self._room)
        return item

    async def wait_for_room(self) -> None:
        """Return once the outbox is not :attr:`full` (one waiter at a time)."""
        while self.full:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Client:
    """One connection's state: authorization, filter, outgoing queue and missed events."""

    __slots__ = (
        "authorized",
        "batch",
        "closing",
        "filter",
        "last_missed",
        "last_sent",
        "missed",
        "outbox",
        "paused",
        "scope",
        "synced",
    )

    def __init__(
        self,
        queue_size: int,
        *,
        authorized: bool,
        synced: int,
        queue_bytes: int = WEBSOCKET_QUEUE_BYTES,
    ) -> None:
        self.outbox = Outbox(queue_size, queue_bytes)
        self.authorized = authorized
        self.filter: p.Filter = p.EVERYTHING
        #: Seconds the sender gathers messages into one ``batch`` message (0: none).
        self.batch = 0.0
        #: Set while a subscription's snapshot is read; the replay buffer covers the gap.
        self.paused = False
        self.closing = False
        #: Events dropped since the last ``lagged`` notice, and the last one's seq.
        self.missed = 0
        self.last_missed = 0
        #: Every event up to this seq has been queued, filtered out or counted as missed.
        self.synced = synced
        #: When the sender last wrote to the socket (``time.monotonic()``, the clock of
        #: anyio on asyncio), for heartbeats.
        self.last_sent = time.monotonic()
        self.scope: anyio.CancelScope | None = None

    @property
    def active(self) -> bool:
        return self.authorized and not self.paused and not self.closing

    def offer(self, seq: int, text: str) -> bool:
        """Queue a live event, or count it as missed; a pending ``lagged`` goes first."""
        self.flush_lag(room=2)
        if not self.missed and self.outbox.offer(text):
            return True
        self.missed += 1
        self.last_missed = seq
        return False

    def flush_lag(self, room: int) -> None:
        """Queue the ``lagged`` notice once there is room for it and ``room - 1`` more."""
        outbox = self.outbox
        if self.missed and len(outbox) + room <= outbox.limit and outbox.bytes < outbox.max_bytes:
            self.outbox.put(p.lagged(missed=self.missed, seq=self.last_missed))
            self.missed = 0

    def close(self, code: int, reason: str, *, now: bool = False) -> None:
        """Close after what is queued, or, ``now``, instead of it (the server stops)."""
        if self.closing and not now:
            return
        self.closing = True
        if now:
            self.outbox.replace(Close(code, reason))
        else:
            self.outbox.put(Close(code, reason))
