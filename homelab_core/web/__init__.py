"""The optional web layer: REST API, ``/ws/metrics``, OpenAPI, docs UI, auth.

Needs the ``web`` extra (``pip install homelab-core[web]``). Nothing outside this package
imports Quart. Names load lazily, so that ``homelab_core.web.serve`` can explain a missing
extra instead of failing to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .extension import HomelabWeb, create_app

__all__ = ["HomelabWeb", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import extension

        return getattr(extension, name)
    raise AttributeError(name)
