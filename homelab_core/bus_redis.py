"""An event bus across nodes: one Redis stream that every node writes and reads.

:class:`RedisBus` is a :class:`~homelab_core.bus.MemoryBus` for this node's subscribers
(the same bounded buffers and ``missed`` counts) that also sends every event it publishes
to one Redis stream, and delivers the events other nodes sent there.

- :meth:`RedisBus.publish` never waits: it delivers to the local subscribers at once and
  queues the event (at most ``max_queue``; past that the oldest is dropped, counted in
  ``dropped``). A sender task encodes what is queued (:mod:`homelab_core.eventcodec`:
  JSON with the publishing node's name) and ``XADD``\\ s it in one pipeline per batch, the
  stream trimmed to about ``stream_length`` entries (``MAXLEN ~``).
- A reader task ``XREAD``\\ s the stream (``BLOCK``) from the last id it read and delivers
  the events of other nodes to the local subscribers; its own it skips (they were
  delivered when published).
- When Redis goes away both tasks retry with a growing pause (up to 2 s), counted in
  ``reconnects`` when it answers again. The reader resumes after the last id it read, so a
  node that was cut off gets what the others sent meanwhile; if the stream was trimmed past
  that id, the entries it can no longer read are added to every local subscriber's
  ``missed`` (and to ``gaps``), as for a subscriber that fell behind. Events queued here
  meanwhile are sent when it is back (the oldest dropped past ``max_queue``).

Why Redis Streams rather than pub/sub: pub/sub forgets a message the moment it is sent, so
a node whose connection dropped for a second loses what was published meanwhile without
knowing how much; a stream keeps a bounded history (``stream_length``), which a reader
resumes from its last id and which tells how much it missed when it was trimmed past it.
A stream also gives every event one id in one order that every node reads alike (which the
WebSocket's ``seq`` and resume can build on), and bounds Redis's memory however slow a
reader is, where pub/sub buffers per subscriber in the server. The cost, one ``XADD`` per
event instead of a ``PUBLISH``, is batched in pipelines.

Order: a node's own subscribers see its events when they are published, those of other
nodes when they are read, so two nodes may interleave events of different nodes
differently; each node's events reach every node in the order it published them. A
pipeline cut by a lost connection may be sent again, so an event may (rarely) arrive twice.

Runs on asyncio (redis-py's asyncio client): :meth:`RedisBus.start` starts both tasks,
:meth:`RedisBus.close` sends what is queued (for at most ``close_timeout`` s) and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .bus import MemoryBus
from .cache_redis import redis_client, redis_errors, stop_task
from .eventcodec import EventCodecError, decode_event, encode_event
from .events import Event
from .redact import redact_urls

log = logging.getLogger("homelab.bus.redis")

#: The field of a stream entry that holds the encoded event.
FIELD = b"e"
_MAX_PAUSE = 2.0


def _id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RedisBus(MemoryBus):
    """Every node's events to every node's subscribers, through one Redis stream.

    :param url: ``redis://host:port/db`` (``rediss://`` for TLS).
    :param node: this node's name, carried by every event it sends.
    :param stream_length: entries the stream keeps (about: ``MAXLEN ~``).
    :param stream: the stream's key.
    :param max_queue: events that may wait to be sent while Redis is slow or away.
    :param batch: events per ``XADD`` pipeline and per ``XREAD``.
    :param block: seconds one ``XREAD`` waits for new entries.
    :param timeout: seconds any other command may take before it counts as failed.
    """

    def __init__(
        self,
        url: str,
        node: str,
        stream_length: int = 100_000,
        *,
        stream: str = "homelab:events",
        default_buffer: int = 1024,
        max_queue: int = 10_000,
        batch: int = 500,
        block: float = 1.0,
        timeout: float = 1.0,
        close_timeout: float = 2.0,
    ) -> None:
        super().__init__(default_buffer)
        self.url = url
        self.node = node
        self.stream = stream
        self.stream_length = stream_length
        self.max_queue = max_queue
        self.batch = batch
        self.block = block
        self.timeout = timeout
        self.close_timeout = close_timeout
        self._errors = redis_errors()
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._sent_all = asyncio.Event()  # set when the queue was sent empty
        self._in_flight = 0
        self._writer: Any = None
        self._reader: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        #: Awaited before each batch is sent (a Redis cache's ``flush``: the values an
        #: event announces are in Redis before the event). Its errors are logged only.
        self.before_send: Callable[[], Awaitable[None]] | None = None
        #: The id of the last stream entry read (None: not positioned yet).
        self.last_id: str | None = None
        # Entries added to the stream up to last_id (read, or lost to trimming).
        self._position = 0
        self._up = {"reader": False, "writer": True}
        self._was_connected = False
        #: Events sent to the stream.
        self.sent = 0
        #: Events of other nodes read from the stream and delivered here.
        self.received = 0
        #: Events not sent: the queue was full (or an event did not encode).
        self.dropped = 0
        #: Times Redis answered again after it had failed.
        self.reconnects = 0
        #: Stream entries this node could not read: trimmed while it was cut off.
        self.gaps = 0
        #: Entries that did not decode (logged).
        self.undecodable = 0

    @property
    def connected(self) -> bool:
        """Whether both the reader and the sender reach Redis."""
        return self._up["reader"] and self._up["writer"]

    @property
    def subscriber_count(self) -> int:
        # Other nodes may listen, whoever subscribes here: publishers must always publish.
        return max(1, len(self._subscribers))

    @property
    def queued(self) -> int:
        """Events waiting to be sent."""
        return len(self._queue)

    def counters(self) -> dict[str, float]:
        """The figures of ``/metrics`` (``homelab_core_bus_redis_*``)."""
        return {
            "bus_redis_connected": 1.0 if self.connected else 0.0,
            "bus_redis_published": self.published,
            "bus_redis_sent": self.sent,
            "bus_redis_received": self.received,
            "bus_redis_dropped": self.dropped,
            "bus_redis_reconnects": self.reconnects,
            "bus_redis_gaps": self.gaps,
            "bus_redis_queued": len(self._queue),
        }

    # -- publishing: local at once, Redis later --------------------------------------------

    def publish(self, event: Event) -> None:
        self.published += 1
        self._deliver(event)
        queue = self._queue
        if len(queue) >= self.max_queue:
            queue.popleft()
            self.dropped += 1
        queue.append(event)
        self._wake.set()

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sender and the reader (a Redis that does not answer yet is retried)."""
        if self._tasks:
            return
        self._writer = redis_client(self.url, self.timeout)
        self._reader = redis_client(
            self.url, self.timeout, socket_timeout=self.block + self.timeout
        )
        self._tasks = [
            asyncio.create_task(self._send(), name="homelab:bus-redis-send"),
            asyncio.create_task(self._read(), name="homelab:bus-redis-read"),
        ]

    async def close(self) -> None:
        """Send what is queued (for at most ``close_timeout`` s) and stop both tasks."""
        tasks, self._tasks = self._tasks, []
        if tasks:
            sender, reader = tasks
            await stop_task(reader)
            if (self._queue or self._in_flight) and self._up["writer"]:
                self._sent_all.clear()
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._sent_all.wait(), self.close_timeout)
            if self._queue:
                log.warning("Redis bus: %d events not sent at shutdown", len(self._queue))
            await stop_task(sender)
        for name in ("_writer", "_reader"):
            client = getattr(self, name)
            setattr(self, name, None)
            if client is not None:
                await client.aclose()

    async def __aenter__(self) -> RedisBus:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _state(self, role: str, up: bool, exc: BaseException | None = None) -> None:
        was = self._up[role]
        self._up[role] = up
        if up and not was and self._was_connected:
            self.reconnects += 1
            log.info("Redis bus at %s: %s reconnected", redact_urls(self.url), role)
        elif not up and was:
            log.warning("Redis bus at %s: %s lost (%s); retrying", redact_urls(self.url), role, exc)
        if self.connected:
            self._was_connected = True

    # -- the sender ------------------------------------------------------------------------

    async def _send(self) -> None:
        pause = 0.0
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.batch))]
            self._in_flight = len(batch)
            if self.before_send is not None:
                try:
                    await self.before_send()
                except Exception:
                    log.exception("Redis bus: before_send failed; sending anyway")
            try:
                pipe = self._writer.pipeline(transaction=False)
                for event in batch:
                    try:
                        data = encode_event(event, self.node)
                    except TypeError as exc:
                        self.dropped += 1
                        log.warning("Redis bus: %s not sent: %s", type(event).__name__, exc)
                        continue
                    pipe.xadd(
                        self.stream,
                        {FIELD: data},
                        maxlen=self.stream_length,
                        approximate=True,
                    )
                await pipe.execute()
            except self._errors as exc:
                self._in_flight = 0
                self._requeue(batch)
                self._state("writer", False, exc)
                pause = min(max(pause * 2, 0.1), _MAX_PAUSE)
                await asyncio.sleep(pause)
                continue
            self._in_flight = 0
            self.sent += len(batch)
            self._state("writer", True)
            pause = 0.0
            if not self._queue:
                self._sent_all.set()

    def _requeue(self, batch: list[Event]) -> None:
        """Put a batch that was not sent back in front; the oldest go when there is no room."""
        room = max(0, self.max_queue - len(self._queue))
        keep = batch[len(batch) - room :] if room < len(batch) else batch
        self.dropped += len(batch) - len(keep)
        self._queue.extendleft(reversed(keep))

    # -- the reader ------------------------------------------------------------------------

    async def _read(self) -> None:
        pause = 0.0
        resume = self.last_id is not None  # started again: go on from where it was
        block = max(1, int(self.block * 1000))
        while True:
            try:
                if self.last_id is None:
                    await self._position_at_end()
                elif resume:
                    await self._check_gap()
                resume = False
                self._state("reader", True)
                pause = 0.0
                while True:
                    reply = await self._reader.xread(
                        {self.stream: self.last_id}, count=self.batch, block=block
                    )
                    self._take(reply)
            except self._errors as exc:
                self._state("reader", False, exc)
                resume = True
                pause = min(max(pause * 2, 0.1), _MAX_PAUSE)
                await asyncio.sleep(pause)

    async def _info(self) -> dict[Any, Any] | None:
        """``XINFO STREAM`` (None when the stream does not exist)."""
        from redis.exceptions import ResponseError

        try:
            info: dict[Any, Any] = await self._reader.xinfo_stream(self.stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise
        return info

    async def _position_at_end(self) -> None:
        """Start after the newest entry: a node reads what is sent from now on."""
        info = await self._info()
        if info is None:
            self.last_id, self._position = "0-0", 0
        else:
            last = info["last-generated-id"]
            self.last_id = last.decode() if isinstance(last, bytes) else str(last)
            self._position = int(info.get("entries-added", 0))

    async def _check_gap(self) -> None:
        """After a lost connection: count what was trimmed past our last id as missed."""
        assert self.last_id is not None
        info = await self._info()
        if info is None:
            if self.last_id != "0-0":
                log.warning("Redis bus: the stream %s is gone; reading it anew", self.stream)
            self.last_id, self._position = "0-0", 0
            return
        if _id(info["last-generated-id"]) < _id(self.last_id):
            # A new stream (Redis restarted empty): its ids start below ours.
            log.warning("Redis bus: the stream %s was made anew; reading it anew", self.stream)
            self.last_id, self._position = "0-0", 0
            return
        first = info.get("first-entry")
        added = info.get("entries-added")
        if first is None or added is None or _id(first[0]) <= _id(self.last_id):
            return
        # Every entry still there is newer than ours: those added after ours but gone
        # were trimmed before this node could read them.
        length = int(info["length"])
        missed = int(added) - length - self._position
        self._position = int(added) - length
        if missed > 0:
            self.gaps += missed
            log.warning(
                "Redis bus: %d events were trimmed from %s before this node could read them",
                missed,
                self.stream,
            )
            for sub in self._subscribers:
                sub.missed += missed

    def _take(self, reply: Any) -> None:
        """Deliver the entries of one ``XREAD`` reply (RESP2 list or RESP3 map)."""
        if not reply:
            return
        streams = reply.items() if isinstance(reply, dict) else reply
        for _name, entries in streams:
            for entry_id, fields in entries:
                self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                self._position += 1
                data = fields.get(FIELD)
                if data is None:
                    continue
                try:
                    decoded = decode_event(data)
                except EventCodecError as exc:
                    self.undecodable += 1
                    log.warning("Redis bus: entry %s skipped: %s", self.last_id, exc)
                    continue
                if decoded.node == self.node:
                    continue
                self.received += 1
                self._deliver(decoded.event)
