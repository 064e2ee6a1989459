"""``/ws/metrics``: the live stream (placeholder until the protocol lands)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from quart import Blueprint

if TYPE_CHECKING:
    from ..hub import Hub
    from .extension import HomelabWeb


class MetricStream:
    """Fans the hub's events out to WebSocket clients."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.clients = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MetricStream]:
        """Run the broadcaster while the hub runs."""
        yield self


def add_websocket(blueprint: Blueprint, web: HomelabWeb) -> None:
    """Register ``/ws/metrics`` on the blueprint."""
