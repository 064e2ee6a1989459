"""The encoded bodies of ``GET /api/plugins/{id}/metrics``, kept until the values change.

Dashboards poll the latest values far more often than instances collect them: encoding the
same values again for every request (reading the cache, rebuilding every metric, validating
and encoding the response) cost more than Quart and the server together. :class:`LatestBodies`
encodes an instance's latest values once and serves those bytes until the hub publishes a
:class:`~homelab_core.events.MetricsCollected` event of that instance, the only way its
latest values change (the hub updates the cache, then publishes the event).

It learns of changes through the bus subscription's ``accept`` filter, which the bus calls as
it publishes: the cached body is dropped before the publisher's next line runs, so a request
that follows a run (``POST .../run``, then ``GET .../metrics``) always sees its values.
Bodies are cached only while that subscription is open; a body read from the cache while an
update was on its way is stored only if no change notice arrived meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ..codec import to_json
from ..events import Event, MetricsCollected

if TYPE_CHECKING:
    from ..hub import Hub
    from ..model import Metric


def encode_latest(plugin_id: str, metrics: list[Metric]) -> bytes:
    """The body: ``{"metrics": [...], "plugin_id": ...}``, keys sorted, newline-terminated."""
    return to_json({"plugin_id": plugin_id, "metrics": metrics}) + b"\n"


class LatestBodies:
    """Encoded latest-metrics bodies per instance, dropped when the instance's values change.

    :param limit: instances whose bodies are kept at most; past it the cache starts afresh.
    """

    def __init__(self, hub: Hub, *, limit: int = 10_000) -> None:
        self.hub = hub
        self.limit = limit
        self._bodies: dict[str, bytes] = {}
        #: Change notices per instance, so that a body read before one is not stored.
        self._changes: dict[str, int] = {}
        self._watching = False
        #: Requests answered from the cache, and bodies encoded (for tests and tuning).
        self.hits = 0
        self.misses = 0

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[LatestBodies]:
        """Cache bodies while the block runs (the hub's bus tells of every change)."""
        async with self.hub.subscribe(buffer=0, accept=self._notice):
            self._watching = True
            try:
                yield self
            finally:
                self._watching = False
                self._bodies.clear()

    def _notice(self, event: Event) -> bool:
        """The bus filter: forget the body of an instance whose metrics changed.

        Never accepts the event: nothing waits on this subscription's buffer.
        """
        if type(event) is MetricsCollected:
            instance_id = event.instance_id
            self._bodies.pop(instance_id, None)
            self._changes[instance_id] = self._changes.get(instance_id, 0) + 1
        return False

    async def body(self, plugin_id: str) -> bytes:
        """The encoded latest values of ``plugin_id``; raises for an unknown instance."""
        hub = self.hub
        hub.plugin_type(plugin_id)  # UnknownInstanceError (404) for an unknown instance
        cached = self._bodies.get(plugin_id)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        changes = self._changes.get(plugin_id, 0)
        metrics = await hub.latest(plugin_id)
        body = encode_latest(plugin_id, metrics)
        if self._watching and self._changes.get(plugin_id, 0) == changes:
            if len(self._bodies) >= self.limit:
                self._bodies.clear()
            self._bodies[plugin_id] = body
        return body
