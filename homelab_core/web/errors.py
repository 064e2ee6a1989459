"""JSON errors: every failure of the API answers ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from quart import Blueprint, Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from ..errors import (
    ClusterError,
    ConflictError,
    HomelabError,
    InvalidArgumentError,
    NotFoundError,
    StoreError,
)

log = logging.getLogger("homelab.web")


#: How the core's errors are answered, by class (the first class that matches wins).
CORE_ERRORS: dict[type[HomelabError], tuple[int, str]] = {
    NotFoundError: (404, "not_found"),
    InvalidArgumentError: (400, "invalid_request"),
    ConflictError: (409, "conflict"),
    StoreError: (503, "unavailable"),
    ClusterError: (503, "unavailable"),
}


class ApiError(Exception):
    """An error to answer with ``status`` and a JSON body."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A JSON error response."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for name, value in headers:
        if name.lower() not in ("content-type", "content-length"):
            response.headers[name] = value
    return response


def http_error_response(error: HTTPException) -> Response:
    """The JSON form of one of Quart's HTTP errors (404, 405 ...), with its headers (a 405
    must say which methods are allowed)."""
    code = (error.name or "error").lower().replace(" ", "_")
    return error_response(
        error.code or 500, code, error.description or error.name, error.get_headers()
    )


def _validation_message(error: RequestSchemaValidationError) -> str:
    cause: Any = error.validation_error
    text = str(cause) if cause is not None else "invalid request"
    return text.replace("$.", "").replace("`$`", "body")


def register_error_handlers(target: Blueprint | Quart) -> None:
    """JSON handlers for the API's errors on ``target`` (a blueprint, or the bundled app)."""

    @target.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers.items())

    @target.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Response:
        return error_response(400, "invalid_request", _validation_message(error))

    @target.errorhandler(RecursionError)
    async def too_deep(error: RecursionError) -> Response:
        # Python's JSON decoder recurses once per nesting level: a body nested deeper
        # than the interpreter's recursion limit is the client's fault, not a crash.
        if "JSON" in str(error):
            return error_response(400, "invalid_request", "the request body is nested too deeply")
        log.exception("unexpected recursion while serving a request")
        return error_response(500, "internal_error", "internal error; see the server log")

    @target.errorhandler(UnicodeDecodeError)
    async def not_text(error: UnicodeDecodeError) -> Response:
        return error_response(400, "invalid_request", "the request body is not UTF-8 text")

    @target.errorhandler(HomelabError)
    async def homelab_error(error: HomelabError) -> Response:
        for cls, (status, code) in CORE_ERRORS.items():
            if isinstance(error, cls):
                return error_response(status, code, str(error))
        log.error("unexpected core error while serving a request: %s", error)
        return error_response(500, "internal_error", str(error))

    @target.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        return http_error_response(error)

    @target.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unexpected error while serving a request")
        return error_response(500, "internal_error", "internal error; see the server log")
