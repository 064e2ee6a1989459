"""What the baseline servers (``bare_rest.py``, ``bare_ws.py``) share.

They run as scripts (``python bench/bare_rest.py ...``), so they import this module as
``serving`` from their own directory.
"""

from __future__ import annotations

import contextlib
import os

import anyio

from homelab_core.config import SchedulerSettings
from homelab_core.hub import tuned_gc
from homelab_core.web.serve import settle_gc


def homelab_gc() -> contextlib.AbstractContextManager[None]:
    """The garbage collector as in a ``homelab serve`` process, for the ``with`` block.

    The web server's settling (:func:`~homelab_core.web.serve.settle_gc`) and the hub's
    tuning while it runs (:func:`~homelab_core.hub.tuned_gc` with the default
    ``[scheduler]`` threshold): the baseline's process gets every advantage the subject's
    does.
    """
    settle_gc()
    return tuned_gc(SchedulerSettings().gc_threshold)


async def orphaned(stop: anyio.Event) -> None:
    """Stop when the bench that started this server is gone."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - polls the process, not an event
        await anyio.sleep(1)
    stop.set()
