"""The store: Tortoise models, the batched writer, history queries, rollups and retention."""

from .history import MAX_POINTS, history
from .retention import Maintenance
from .store import SeriesInfo, Store, StoredInstance
from .writer import BatchWriter, WriteQueue

__all__ = [
    "MAX_POINTS",
    "BatchWriter",
    "Maintenance",
    "SeriesInfo",
    "Store",
    "StoredInstance",
    "WriteQueue",
    "history",
]
