"""Who may ask: the access token, checked by Starlette's ``AuthenticationMiddleware`` on every request.

A server with a token answers only requests that carry it, as ``Authorization: Bearer TOKEN`` or as the
password of HTTP Basic (any user name: what a browser sends after asking, prompted by the
``WWW-Authenticate`` header of the 401).  Tokens are printable ASCII (:class:`ServeSettings` refuses
others at start), so both forms compare the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.authentication import AuthCredentials, AuthenticationError, SimpleUser
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

UNAUTHORIZED = "this server needs its access token: send 'Authorization: Bearer TOKEN'"


class TokenCheck:
    """The authentication backend of ``starlette.middleware.authentication.AuthenticationMiddleware``:
    a request without the token raises :class:`AuthenticationError` (answered by :func:`unauthorized`)."""

    def __init__(self, token: str):
        self._token = token.encode("ascii")

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        if not carries_token(conn.headers.get("authorization"), self._token):
            raise AuthenticationError(UNAUTHORIZED)
        return AuthCredentials(["authenticated"]), SimpleUser("client")


def carries_token(header: str | None, token: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (Bearer, or Basic with it as the password)."""
    kind, _, credential = (header or "").strip().partition(" ")
    credential = credential.strip()
    if kind.lower() == "basic":
        try:
            credential = base64.b64decode(credential, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif kind.lower() != "bearer":
        return False
    return hmac.compare_digest(credential.encode("utf-8"), token)


def unauthorized(conn: HTTPConnection, exc: AuthenticationError) -> JSONResponse:
    """401, asking a browser for the token as a password; the connection is closed (a body is left unread)."""
    return JSONResponse({"detail": str(exc)}, status_code=401,
                        headers={"WWW-Authenticate": 'Basic realm="thyro", charset="UTF-8"', "Connection": "close"})
