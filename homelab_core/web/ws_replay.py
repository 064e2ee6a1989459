"""The ``/ws/metrics`` stream's numbering and its buffer of recent events.

:class:`Replay` gives each event its ``seq`` and keeps the most recent ones, so that a
client that reconnects with ``since`` receives exactly what it missed; see "Resuming" in
``docs/websocket.md``. The buffer is bounded twice: by a number of events and by the
memory their texts take, so that large collections (20,000 metrics make events of a few
megabytes) cannot make it grow while no client is connected.
"""

from __future__ import annotations

import secrets
import sys
from collections import deque

from ..config import WEBSOCKET_REPLAY_BYTES
from . import ws_protocol as p


class Replay:
    """One run of the stream's sequence numbers and the events kept for resuming.

    :param size: events kept; older ones are forgotten, and with them the resumes that
        would need them.
    :param max_bytes: memory the kept events' texts may take (``sys.getsizeof`` of each
        encoded event: for ASCII JSON, its length plus a few dozen bytes); the oldest are
        forgotten first. An event larger than this is sent to the connected clients but
        not kept.
    """

    __slots__ = ("_entries", "_sizes", "bytes", "floor", "id", "max_bytes", "seq")

    def __init__(self, size: int, max_bytes: int = WEBSOCKET_REPLAY_BYTES) -> None:
        #: Identifies this run of the stream: sequence numbers restart with it.
        self.id = secrets.token_hex(8)
        #: The last sequence number assigned.
        self.seq = 0
        #: Every event after this seq is in the buffer.
        self.floor = 0
        #: Recent events as plain tuples of text and numbers, which the garbage collector
        #: stops tracking. Frames with their parsed data would be many tracked objects
        #: per event, which every full collection walks, and each one pauses every client
        #: (figures in docs/performance.md).
        self._entries: deque[p.Entry] = deque(maxlen=size)
        #: The size of each kept entry, in the same order.
        self._sizes: deque[int] = deque()
        self.max_bytes = max_bytes
        #: What the kept events' texts take, in bytes (at most ``max_bytes``).
        self.bytes = 0

    def record(self, frame: p.Frame) -> None:
        """Keep ``frame``, numbered ``seq + 1``; the oldest events go when full."""
        self.seq = frame.seq
        entries, sizes = self._entries, self._sizes
        size = sys.getsizeof(frame.text)
        if len(entries) == entries.maxlen:
            self._forget()
        while entries and self.bytes + size > self.max_bytes:
            self._forget()
        if size > self.max_bytes:  # never kept: nobody can resume from before it
            self.floor = frame.seq
            return
        entries.append(frame.entry())
        sizes.append(size)
        self.bytes += size

    def _forget(self) -> None:
        """Drop the oldest kept event."""
        self.floor = self._entries.popleft()[0]
        self.bytes -= self._sizes.popleft()

    def skip(self, count: int) -> None:
        """Number ``count`` lost events: nobody can resume across them."""
        self.seq += count
        self.floor = self.seq

    def resumable(self, since: int, stream: str | None) -> bool:
        """Whether every event after ``since`` of this stream is in the buffer."""
        return stream in (None, self.id) and self.floor <= since <= self.seq

    def after(self, seq: int, wanted: p.Filter) -> list[str]:
        """The texts of the kept events after ``seq`` that ``wanted`` lets through."""
        entries: list[p.Entry] = []
        for entry in reversed(self._entries):
            if entry[0] <= seq:
                break
            entries.append(entry)
        texts = (wanted.render_entry(entry) for entry in reversed(entries))
        return [text for text in texts if text is not None]
