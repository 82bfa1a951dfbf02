"""HTTP Basic auth as a FastAPI dependency that guards REST routes and the WebSocket alike.

The dependency takes an `HTTPConnection` (the common base of `Request` and `WebSocket`), so one callable
works on every route: on a WebSocket handshake an HTTPException becomes an HTTP 401 denial before the
socket is accepted (or a 1008 close where the ASGI server cannot send a denial response).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable

from fastapi import HTTPException, status
from starlette.requests import HTTPConnection

from celery_flow.server.config import parse_credentials

__all__ = ["parse_credentials", "require_basic_auth"]

AuthDependency = Callable[..., object]


def _decode_basic(header: str | None) -> tuple[bytes, bytes] | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    return user, password


def require_basic_auth(
    user: str, password: str, realm: str = "celery-flow"
) -> Callable[[HTTPConnection], None]:
    """A dependency admitting only `user:password`; compares in constant time and always both parts."""
    expected_user = user.encode("utf-8")
    expected_password = password.encode("utf-8")
    challenge = {"WWW-Authenticate": f'Basic realm="{realm}", charset="UTF-8"'}

    def check_basic_auth(conn: HTTPConnection) -> None:
        given = _decode_basic(conn.headers.get("authorization"))
        given_user, given_password = given if given is not None else (b"", b"")
        # Evaluate both comparisons regardless of the first result, so timing reveals neither part.
        user_ok = secrets.compare_digest(given_user, expected_user)
        password_ok = secrets.compare_digest(given_password, expected_password)
        if given is None or not (user_ok and password_ok):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="authentication required",
                headers=challenge,
            )

    return check_basic_auth
