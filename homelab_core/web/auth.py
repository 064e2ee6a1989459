"""Bearer-token authentication of the API and the WebSocket.

With no token configured nothing is checked: the bundled server then refuses to bind
beyond loopback unless told ``--insecure``. With a token, changes (POST) always need it;
``[server] auth = "all"`` makes reads and the WebSocket need it too.
"""

from __future__ import annotations

import hmac

from ..config import ServerSettings
from ..config import bind_problem as bind_problem  # the rule lives with the settings
from ..config import is_loopback as is_loopback
from .errors import ApiError


def needs_token(server: ServerSettings, *, write: bool) -> bool:
    """Whether a request (a change if ``write``) must carry the token."""
    if not server.api_token:
        return False
    return write or server.auth == "all"


def token_matches(server: ServerSettings, presented: str | None) -> bool:
    """Compare a presented token with the configured one in constant time."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), server.api_token.encode())


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def check_request(server: ServerSettings, header: str | None, *, write: bool) -> None:
    """Raise :class:`ApiError` 401 (no token) or 403 (wrong token) when access is denied."""
    if not needs_token(server, write=write):
        return
    token = bearer(header)
    if token is None:
        raise ApiError(
            401,
            "unauthorized",
            "this request needs 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": 'Bearer realm="homelab"'},
        )
    if not token_matches(server, token):
        raise ApiError(403, "forbidden", "the bearer token is not valid")
