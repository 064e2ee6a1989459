"""The fixtures of the ``homelab`` pytest plugin (loaded with :mod:`homelab_core.testing`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._clock import Clock
from ._hub import HubFactory


@pytest.fixture
def homelab_clock() -> Iterator[Clock]:
    """A fresh :class:`~homelab_core.testing.Clock`, installed as the framework's clock for
    the test (the previous one is restored after)."""
    clock = Clock()
    with clock.installed():
        yield clock


@pytest.fixture
def homelab_hub(tmp_path: Path) -> HubFactory:
    """Start real hubs on SQLite files in ``tmp_path``:
    ``async with homelab_hub(MyPlugin, instances={...}) as hub:`` (see
    :class:`~homelab_core.testing.HubFactory`)."""
    return HubFactory(tmp_path)
