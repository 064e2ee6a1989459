"""The dashboard's routes: ``<prefix>/`` (the page) and ``<prefix>/ui/<version>/<file>``
(its assets), served from the package (``web/static/dashboard``), never from elsewhere.

The assets' URL carries a version made of the package version and a hash of the assets'
bytes, so they are cached for a year (``immutable``) and an upgrade still loads the new
ones at once; the page itself is revalidated at every load. The page needs no token: it
asks the user for one when the API does, and the API and the stream check it.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Callable
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from quart import Blueprint, Response
from quart_schema import hide

from .. import __version__
from .errors import ApiError

#: Endpoints of this module that never need the token (see ``api.PUBLIC_ENDPOINTS``).
ENDPOINTS = ("homelab.dashboard", "homelab.dashboard_asset", "homelab.status_page")
#: The pages (templates with ``{{PREFIX}}`` and ``{{ASSETS}}``), not served as assets.
PAGES = ("index.html", "status.html")
#: How long a browser may keep an asset (their URL changes when they do).
ASSET_MAX_AGE = 365 * 24 * 3600


def _directory() -> Traversable:
    return files(__package__) / "static" / "dashboard"


@cache
def assets() -> dict[str, bytes]:
    """Every asset of the dashboard by file name (read once)."""
    return {
        entry.name: entry.read_bytes()
        for entry in _directory().iterdir()
        if entry.is_file() and entry.name not in PAGES and not entry.name.startswith(".")
    }


@cache
def assets_version() -> str:
    """Changes whenever the package version or any asset changes."""
    digest = hashlib.sha256(__version__.encode())
    for name, body in sorted(assets().items()):
        digest.update(name.encode() + b"\0" + body)
    return digest.hexdigest()[:12]


def _page(name: str, url_prefix: str) -> Response:
    """A page of the package with its placeholders filled in, revalidated at every load."""
    page = (_directory() / name).read_text(encoding="utf-8")
    page = page.replace("{{PREFIX}}", url_prefix)
    page = page.replace("{{ASSETS}}", f"{url_prefix}/ui/{assets_version()}")
    response = Response(page, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


def add_dashboard(
    blueprint: Blueprint, url_prefix: str, status_on: Callable[[], bool] = lambda: False
) -> None:
    """Serve the dashboard from ``blueprint`` (mounted at ``url_prefix``), and the public
    status page at ``<prefix>/status`` while ``status_on()`` says it is on."""

    @blueprint.get("/")
    @hide
    async def dashboard() -> Response:
        """The dashboard page."""
        page = (_directory() / "index.html").read_text(encoding="utf-8")
        page = page.replace("{{PREFIX}}", url_prefix)
        page = page.replace("{{ASSETS}}", f"{url_prefix}/ui/{assets_version()}")
        response = Response(page, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @blueprint.get("/status")
    @hide
    async def status_page() -> Response:
        """The public status page ([status_page] enabled), a 404 otherwise."""
        if not status_on():
            raise ApiError(404, "not_found", "the status page is off ([status_page] enabled)")
        return _page("status.html", url_prefix)

    @blueprint.get("/ui/<version>/<name>")
    @hide
    async def dashboard_asset(version: str, name: str) -> Response:
        """One asset; a version other than the current one is a 404 (never stale bytes
        under a new name)."""
        body = assets().get(name)
        if body is None or version != assets_version():
            raise ApiError(404, "not_found", f"no dashboard asset {name!r} of this version")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
            kind += "; charset=utf-8"
        response = Response(body, content_type=kind)
        response.headers["Cache-Control"] = f"public, max-age={ASSET_MAX_AGE}, immutable"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
