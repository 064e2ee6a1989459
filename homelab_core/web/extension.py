"""The embeddable extension and the bundled server's app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from importlib.resources import files
from typing import Any

import attrs
import msgspec
from quart import Blueprint, Quart, Response, current_app, send_file
from quart_schema import QuartSchema, hide

from .. import __version__, compat
from ..config import Settings, load_settings
from ..hub import Hub
from ..plugins import PluginManager
from . import schemas
from .api import create_blueprint
from .errors import ApiError, register_error_handlers
from .latest import LatestBodies
from .prometheus import exposition
from .ws import MetricStream, add_websocket

EXTENSION_KEY = "homelab"
#: ``[server]`` settings that configure the WebSocket stream, and the argument of
#: :class:`MetricStream` each one sets.
STREAM_SETTINGS = {
    "websocket_heartbeat": "heartbeat",
    "websocket_queue_size": "queue_size",
    "websocket_queue_bytes": "queue_bytes",
    "websocket_replay_size": "replay_size",
    "websocket_replay_bytes": "replay_bytes",
}


class HomelabWeb:
    """Mounts Homelab Core's API into a Quart app and runs the hub while the app serves.

    ::

        app = Quart(__name__)
        HomelabWeb(app, settings=load_settings(), url_prefix="/homelab")

    The hub starts before the app serves its first request and stops (draining the write
    queue) when the app shuts down. Pass ``hub=`` to share a hub you run yourself, or
    ``plugin_manager=`` to choose the plugins of the hub the extension runs.
    quart-schema is app-wide: an existing ``QuartSchema`` on the app is reused.
    """

    def __init__(
        self,
        app: Quart | None = None,
        *,
        settings: Settings | None = None,
        hub: Hub | None = None,
        plugin_manager: PluginManager | None = None,
        url_prefix: str = "",
        stream_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = (
            settings
            if settings is not None
            else (hub.settings if hub is not None else load_settings())
        )
        self._own_hub = hub is None
        self._hub: Hub | None = hub
        self._plugin_manager = plugin_manager
        #: Keyword arguments of the WebSocket broadcaster (queue and replay sizes,
        #: heartbeat): the ``[server] websocket_*`` settings, then ``stream_options``.
        self.stream_options = stream_settings(self.settings, stream_options)
        self.url_prefix = url_prefix
        #: The WebSocket broadcaster while serving.
        self.stream: MetricStream | None = None
        #: The encoded latest-metrics bodies while serving.
        self._latest: LatestBodies | None = None
        if app is not None:
            self.init_app(app, url_prefix=url_prefix)

    def init_app(self, app: Quart, url_prefix: str | None = None) -> None:
        """Register the API blueprint under ``url_prefix`` and tie the hub to serving."""
        prefix = (self.url_prefix if url_prefix is None else url_prefix).rstrip("/")
        self.url_prefix = prefix
        app.extensions[EXTENSION_KEY] = self
        if "QUART_SCHEMA" not in app.extensions:
            QuartSchema(
                app,
                info={"title": "Homelab Core", "version": __version__},
                openapi_path=f"{prefix}/openapi.json",
                swagger_ui_path=None,
                redoc_ui_path=None,
                scalar_ui_path=None,
                security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
            )
        complete_components(app.extensions["QUART_SCHEMA"], metrics_path=f"{prefix}/metrics")
        blueprint = create_blueprint(self)
        add_extras(blueprint, self)
        add_websocket(blueprint, self)
        app.register_blueprint(blueprint, url_prefix=prefix or None)
        app.while_serving(self._serve)  # type: ignore[type-var]

    async def _serve(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if self._own_hub:
                self._hub = await stack.enter_async_context(
                    Hub(self.settings, plugin_manager=self._plugin_manager)
                )
            assert self._hub is not None
            self._latest = await stack.enter_async_context(LatestBodies(self._hub).watching())
            stream = MetricStream(self._hub, **self.stream_options)
            self.stream = await stack.enter_async_context(stream.running())
            try:
                yield
            finally:
                self.stream = None
                self._latest = None
                if self._own_hub:
                    self._hub = None

    @property
    def running_hub(self) -> Hub | None:
        """The hub, or None before serving starts and after it stops."""
        return self._hub

    @property
    def hub(self) -> Hub:
        """The running hub; a 503 error for requests while it is not running."""
        if self._hub is None:
            raise ApiError(503, "unavailable", "the hub is not running")
        return self._hub

    @property
    def latest(self) -> LatestBodies:
        """The latest-metrics bodies; a 503 error while the hub is not running."""
        latest = self._latest
        if latest is None or self._hub is None:
            raise ApiError(503, "unavailable", "the hub is not running")
        return latest


def stream_settings(settings: Any, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The :class:`MetricStream` arguments that ``settings`` and ``overrides`` set."""
    server = settings.server
    options = {arg: getattr(server, name) for name, arg in STREAM_SETTINGS.items()}
    options.update(overrides or {})
    return options


PROMETHEUS_RESPONSES = {
    "200": {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    "401": {"description": "Missing bearer token"},
    "403": {"description": "Wrong bearer token"},
    "503": {"description": "The hub is not running"},
}


def _required_query_fields() -> dict[frozenset[str], set[str]]:
    models = (schemas.PluginsQuery, schemas.HistoryQuery, schemas.ExecutionsQuery)
    return {
        frozenset(f.name for f in attrs.fields(m)): {
            f.name for f in attrs.fields(m) if f.default is attrs.NOTHING
        }
        for m in models
    }


_REQUIRED_QUERY = _required_query_fields()


def _complete_operation(method: str, operation: dict[str, Any]) -> None:
    """What quart-schema leaves out of one operation: required query parameters (it looks
    for ``required`` on each property), required bodies, and the POSTs' bearer security."""
    query = [p for p in operation.get("parameters", []) if p.get("in") == "query"]
    required = _REQUIRED_QUERY.get(frozenset(p["name"] for p in query), set())
    for parameter in query:
        if parameter["name"] in required:
            parameter["required"] = True
    if "requestBody" in operation:
        operation["requestBody"]["required"] = True
    if method == "post":
        operation.setdefault("security", [{"bearer": []}])


def complete_components(schema_extension: QuartSchema, *, metrics_path: str) -> None:
    """Put the API's nested schemas into the OpenAPI document's components.

    quart-schema keeps only the top model of each msgspec schema, so references to nested
    ones (``HealthOut`` inside ``PluginOut``) would dangle; and it cannot describe the text
    response of ``metrics_path``. Wraps the provider once
    (:func:`~homelab_core.compat.wrap_openapi_schema`).
    """
    _, components = msgspec.json.schema_components(
        schemas.SCHEMA_CLASSES, ref_template="#/components/schemas/{name}"
    )

    def complete(document: dict[str, Any]) -> dict[str, Any]:
        known = document.setdefault("components", {}).setdefault("schemas", {})
        for name, value in components.items():
            known.setdefault(name, value)
        for operations in document.get("paths", {}).values():
            for method, operation in operations.items():
                _complete_operation(method, operation)
        prometheus = document.get("paths", {}).get(metrics_path, {}).get("get")
        if prometheus is not None:
            prometheus["responses"] = PROMETHEUS_RESPONSES
        return document

    compat.wrap_openapi_schema(schema_extension, complete)


def add_extras(blueprint: Blueprint, web: HomelabWeb) -> None:
    """``/metrics`` (Prometheus) and ``/docs`` (the API docs, served from the package)."""

    @blueprint.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition of every series' latest value and our own counters."""
        stream = web.stream
        extra = {
            "websocket_clients": stream.clients if stream else 0,
            "websocket_dropped": stream.dropped if stream else 0,
            "websocket_lost": stream.lost if stream else 0,
            "websocket_replay_bytes": stream.replay.bytes if stream else 0,
        }
        body = await exposition(web.hub, extra)
        return Response(body, content_type="text/plain; version=0.0.4; charset=utf-8")

    @blueprint.get("/docs")
    @hide
    async def docs() -> Response:
        """The API documentation page; its assets come from this package, not a CDN."""
        schema = current_app.extensions["QUART_SCHEMA"]
        page = (files(__package__) / "static" / "docs.html").read_text(encoding="utf-8")
        page = page.replace("{{OPENAPI_URL}}", schema.openapi_path or "/openapi.json")
        page = page.replace("{{STATIC}}", f"{web.url_prefix}/docs/static")
        return Response(page, content_type="text/html; charset=utf-8")

    @blueprint.get("/docs/static/<name>")
    @hide
    async def docs_static(name: str) -> Response:
        if name not in ("docs.js", "docs.css"):
            raise ApiError(404, "not_found", f"no such file {name!r}")
        path = files(__package__) / "static" / name
        # Revalidate every time (by ETag), so an upgrade never leaves an old page in caches.
        return await send_file(str(path), cache_timeout=0, conditional=True)


def create_app(
    settings: Settings | None = None, *, plugin_manager: PluginManager | None = None
) -> Quart:
    """The bundled server's app: the API at the root, JSON errors for every path."""
    app = Quart("homelab_core")
    HomelabWeb(app, settings=settings, plugin_manager=plugin_manager)
    register_error_handlers(app)
    return app
