"""The embeddable extension and the bundled server's app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from importlib.resources import files
from typing import Any

import attrs
import msgspec
from quart import Blueprint, Quart, Response, current_app, request, send_file, websocket
from quart.wrappers import BaseRequestWebsocket
from quart_schema import OpenAPIProvider, QuartSchema, hide
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Rule

from .. import __version__, compat
from ..config import Settings, load_settings
from ..hub import Hub
from ..plugins import PluginManager
from . import schemas
from .api import create_blueprint
from .dashboard import add_dashboard
from .errors import ApiError, error_response, http_error_response, register_error_handlers
from .latest import LatestBodies
from .origins import HostCheck, Refusals, check_origin, configured_origins
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
#: Mounted at the root, the paths whose errors are the extension's (JSON): the rest of
#: the app's paths are the host application's.
ROOT_PATHS = ("/api", "/ws", "/docs", "/metrics", "/openapi.json")


class HomelabOpenAPI(OpenAPIProvider):
    """quart-schema's OpenAPI document, of the extension's routes only (unless told).

    quart-schema documents every route of the app; the document that the extension
    creates describes Homelab Core's API, so the host application's own routes are left
    out unless the embedder asks for them (``HomelabWeb(document_host_routes=True)``).
    """

    #: The endpoint prefix (blueprint name and a dot) of the routes to document.
    endpoints = "homelab."
    #: Whether every route of the app is documented.
    document_host_routes = False

    def generate_rules(self) -> Iterable[Rule]:
        for rule in super().generate_rules():
            if self.document_host_routes or rule.endpoint.startswith(self.endpoints):
                yield rule


class HomelabWeb:
    """Mounts Homelab Core's API into a Quart app and runs the hub while the app serves.

    ::

        app = Quart(__name__)
        HomelabWeb(app, settings=load_settings(), url_prefix="/homelab")

    The hub starts before the app serves its first request and stops (draining the write
    queue) when the app shuts down. Pass ``hub=`` to share a hub you run yourself, or
    ``plugin_manager=`` to choose the plugins of the hub the extension runs.

    quart-schema is app-wide: an existing ``QuartSchema`` on the app is reused, and its
    document lists the app's routes as it decides. Otherwise the extension creates one,
    with the document at ``<prefix>/openapi.json`` listing only Homelab Core's routes, or
    the app's own too with ``document_host_routes=True``.

    The application decides which ``Host`` names it answers; ``allowed_hosts`` makes the
    extension's routes refuse (421) any other (``name`` for any port, ``name:port``, ``*``).
    Changes and the WebSocket are accepted from the page's own origin, programs that send
    no ``Origin``, and the ``[server] allowed_origins`` of the settings; see
    :mod:`homelab_core.web.origins`.
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
        allowed_hosts: Sequence[str] | None = None,
        document_host_routes: bool = False,
        dashboard: bool = True,
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
        #: The ``Host`` names the extension's routes answer; None leaves it to the app.
        self.host_check: HostCheck | None = (
            HostCheck.configured(allowed_hosts, setting="the allowed_hosts of HomelabWeb")
            if allowed_hosts is not None
            else None
        )
        #: The origins, besides the server's own, whose pages may change things.
        self.origins = configured_origins(self.settings.server.allowed_origins)
        #: The requests refused as coming from pages of other sites, counted and logged.
        self.refusals = Refusals()
        self.document_host_routes = document_host_routes
        #: Whether ``<prefix>/`` serves the dashboard (``dashboard=False`` leaves the
        #: root to the application).
        self.dashboard = dashboard
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
        blueprint = create_blueprint(self)
        if "QUART_SCHEMA" not in app.extensions:
            schema = QuartSchema(
                app,
                info={"title": "Homelab Core", "version": __version__},
                openapi_path=f"{prefix}/openapi.json",
                swagger_ui_path=None,
                redoc_ui_path=None,
                scalar_ui_path=None,
                security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                openapi_provider_class=HomelabOpenAPI,
            )
            provider = schema.openapi_provider
            if isinstance(provider, HomelabOpenAPI):
                provider.endpoints = f"{blueprint.name}."
                provider.document_host_routes = self.document_host_routes
        complete_components(app.extensions["QUART_SCHEMA"], metrics_path=f"{prefix}/metrics")
        add_extras(blueprint, self)
        if self.dashboard:
            add_dashboard(blueprint, prefix, lambda: self.settings.status_page.enabled)
        add_websocket(blueprint, self)
        app.register_blueprint(blueprint, url_prefix=prefix or None)
        # A path that matches no route has no blueprint, so the blueprint's JSON error
        # handlers never see it: answer those under the prefix here, leave the rest alone.
        app.before_request(self._unmatched_request)
        app.before_websocket(self._unmatched_websocket)
        app.while_serving(self._serve)  # type: ignore[type-var]

    def check_host(self, header: str | None, check: HostCheck | None = None) -> None:
        """Refuse (421, counted) a ``Host`` that ``check`` (default: the extension's own,
        if any) does not answer."""
        check = check if check is not None else self.host_check
        if check is None:
            return
        try:
            check.check(header)
        except ApiError as refused:
            self.refusals.note(refused)
            raise

    def check_origin(self, origin: str | None, host: str | None) -> None:
        """Refuse (403, counted) a change or WebSocket from a page of another site."""
        try:
            check_origin(origin, host, self.origins)
        except ApiError as refused:
            self.refusals.note(refused)
            raise

    def owns(self, path: str) -> bool:
        """Whether ``path`` is the extension's: under its prefix (or, mounted at the root,
        one of :data:`ROOT_PATHS`)."""
        roots = (self.url_prefix,) if self.url_prefix else ROOT_PATHS
        return any(path == root or path.startswith(f"{root}/") for root in roots)

    async def _unmatched_request(self) -> Response | None:
        return self._unmatched(request)

    async def _unmatched_websocket(self) -> Response | None:
        return self._unmatched(websocket)

    def _unmatched(self, incoming: BaseRequestWebsocket) -> Response | None:
        """JSON errors for the extension's paths that match no route (404) or method (405)."""
        error = incoming.routing_exception
        if not isinstance(error, NotFound | MethodNotAllowed) or not self.owns(incoming.path):
            return None
        try:
            self.check_host(incoming.headers.get("Host"))
        except ApiError as refused:
            return error_response(refused.status, refused.code, refused.message)
        return http_error_response(error)

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
    models = (
        schemas.PluginsQuery,
        schemas.HistoryQuery,
        schemas.ExecutionsQuery,
        schemas.AlertsQuery,
        schemas.AlertHistoryQuery,
        schemas.SilencesQuery,
    )
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
    for parameter in operation.get("parameters", []):
        about = schemas.PATH_PARAMETERS.get(parameter["name"])
        if parameter.get("in") == "path" and about is not None:
            parameter.setdefault("description", about[0])
            parameter.setdefault("example", about[1])
    if "requestBody" in operation:
        operation["requestBody"]["required"] = True
    if method in ("post", "delete"):
        operation.setdefault("security", [{"bearer": []}])


def add_links(document: dict[str, Any]) -> None:
    """OpenAPI links (:data:`~homelab_core.web.schemas.LINKS`): from what a POST made to
    the operations on it, by ``operationId``, so that a client (and schemathesis's
    stateful phase) can follow them: create an instance, read, change and delete it."""
    operations = {
        operation.get("operationId"): operation
        for path_item in document.get("paths", {}).values()
        for operation in path_item.values()
        if isinstance(operation, dict)
    }
    for (source, status), (parameter, targets) in schemas.LINKS.items():
        responses = operations.get(source, {}).get("responses", {})
        # quart-schema keys responses by number; the JSON document, by text.
        response = responses.get(status, responses.get(int(status)))
        if response is None:
            continue
        links = response.setdefault("links", {})
        for name, target in targets.items():
            if target in operations:
                links[name] = {
                    "operationId": target,
                    "parameters": {parameter: "$response.body#/id"},
                    "description": f"The {parameter} of what the answer made.",
                }


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
        add_links(document)
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
            "web_refused": web.refusals.count,
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
    settings: Settings | None = None,
    *,
    plugin_manager: PluginManager | None = None,
    hub: Hub | None = None,
) -> Quart:
    """The bundled server's app: the API at the root, JSON errors for every path.

    It answers only the names it is reached under (see :class:`HostCheck`): its
    ``[server]`` address and port (for a loopback address, the loopback names; for every
    interface, any address and this machine's name) and ``[server] allowed_hosts``. Pass
    ``hub=`` to serve a hub that is already running (``homelab serve`` starts it first).
    """
    web = HomelabWeb(settings=settings, plugin_manager=plugin_manager, hub=hub)
    server = web.settings.server
    check = HostCheck.for_server(server.host, server.port, server.allowed_hosts)
    app = Quart("homelab_core")

    async def check_request_host() -> None:
        web.check_host(request.headers.get("Host"), check)

    async def check_websocket_host() -> None:
        web.check_host(websocket.headers.get("Host"), check)

    # Before the extension's own hooks: no path of this app answers a foreign name.
    app.before_request(check_request_host)
    app.before_websocket(check_websocket_host)
    web.init_app(app)
    register_error_handlers(app)
    return app
