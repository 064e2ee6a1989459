"""Broadcast of events to subscribers.

The bus carries the typed events of :mod:`homelab_core.events`. :class:`MemoryBus` gives
each subscriber its own bounded anyio memory stream. Publishing never waits: when a
subscriber's buffer is full the event is dropped for that subscriber alone and counted in
:attr:`Subscription.missed`. The :class:`Bus` interface lets other backends slot in:
:class:`~homelab_core.bus_redis.RedisBus` carries every node's events to every node.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .events import Event


class Subscription:
    """A subscriber's end of the bus: iterate it (``async for event in sub``) for events.

    ``missed`` counts events dropped because this subscriber's buffer was full;
    :meth:`take_missed` reads and resets it so the consumer can report each gap once.
    """

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[Event],
        accept: Callable[[Event], bool] | None,
    ) -> None:
        self._receive = receive
        self.accept = accept
        self.missed = 0
        self.delivered = 0

    def take_missed(self) -> int:
        """The number of events missed since the last call; resets the count."""
        missed, self.missed = self.missed, 0
        return missed

    async def receive(self) -> Event:
        """Wait for the next event."""
        return await self._receive.receive()

    def receive_nowait(self) -> Event:
        """The next event if one is buffered; raises :class:`anyio.WouldBlock` otherwise."""
        return self._receive.receive_nowait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._receive.__aiter__()


class Bus(abc.ABC):
    """Interface of an event bus: fire-and-forget publish, bounded per-subscriber delivery."""

    @abc.abstractmethod
    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber without waiting."""

    @abc.abstractmethod
    def subscribe(self, *, buffer: int = ..., accept: Callable[[Event], bool] | None = None) -> Any:
        """An async context manager yielding a :class:`Subscription`."""

    @property
    @abc.abstractmethod
    def subscriber_count(self) -> int:
        """How many subscriptions are open (never 0 while anyone may listen).

        Publishers may skip building an event nobody can receive when this is 0; a bus that
        spans processes reports its remote listeners too (or 1 when it cannot know).
        """


class MemoryBus(Bus):
    """In-process bus on anyio memory object streams."""

    def __init__(self, default_buffer: int = 1024) -> None:
        self.default_buffer = default_buffer
        self._subscribers: dict[Subscription, MemoryObjectSendStream[Event]] = {}
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        self.published += 1
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        """Hand ``event`` to every local subscriber that accepts it, without waiting."""
        for sub, send in self._subscribers.items():
            if sub.accept is not None and not sub.accept(event):
                continue
            try:
                send.send_nowait(event)
                sub.delivered += 1
            except anyio.WouldBlock:
                sub.missed += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    @asynccontextmanager
    async def subscribe(
        self, *, buffer: int | None = None, accept: Callable[[Event], bool] | None = None
    ) -> AsyncIterator[Subscription]:
        """Open a subscription; ``accept`` filters events before they use buffer space."""
        size = self.default_buffer if buffer is None else buffer
        send, receive = anyio.create_memory_object_stream[Event](size)
        sub = Subscription(receive, accept)
        self._subscribers[sub] = send
        try:
            yield sub
        finally:
            del self._subscribers[sub]
            send.close()
            receive.close()
