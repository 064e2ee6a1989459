"""Waiting, bounded, for a condition that nothing can be awaited for."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import anyio
import pytest


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str
) -> None:
    """Wait until ``check()`` (a bool or an awaitable of one) is true; fail naming ``what``
    after ``timeout`` seconds."""
    try:
        with anyio.fail_after(timeout):
            while True:
                result = check()
                if await result if inspect.isawaitable(result) else result:
                    return
                await anyio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {timeout:g} s: {what}")
