"""The ``/ws/metrics`` stream's numbering and its buffer of recent events.

:class:`Replay` gives each event its ``seq`` and keeps the most recent ones, so that a
client that reconnects with ``since`` receives exactly what it missed; see "Resuming" in
``docs/websocket.md``.
"""

from __future__ import annotations

import secrets
from collections import deque

from . import ws_protocol as p


class Replay:
    """One run of the stream's sequence numbers and the events kept for resuming.

    :param size: events kept; older ones are forgotten, and with them the resumes that
        would need them.
    """

    __slots__ = ("_entries", "floor", "id", "seq")

    def __init__(self, size: int) -> None:
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

    def record(self, frame: p.Frame) -> None:
        """Keep ``frame``, numbered ``seq + 1``; the oldest event goes when full."""
        self.seq = frame.seq
        entries = self._entries
        if len(entries) == entries.maxlen:
            self.floor = entries[0][0]
        entries.append(frame.entry())

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
