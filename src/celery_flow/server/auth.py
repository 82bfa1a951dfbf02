"""Auth for celery-flow's routes: the bundled Basic auth, and running any auth dependency on the WebSocket.

`auth_dependency` is whatever FastAPI apps already write: a callable, `Depends(...)`, or a list of them
(like `dependencies=`), typed on `Request`, async or not, with sub-dependencies of their own.
`HandshakeGuard` runs them on the live WebSocket's handshake exactly as on a GET of the same URL, so one
dependency guards REST, UI and live alike, and a handshake it does not admit is refused, never opened.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from fastapi import Depends, HTTPException, Request, WebSocket, params, status
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection
from starlette.types import Message

from celery_flow.server.config import parse_credentials

__all__ = ["HandshakeGuard", "as_dependencies", "parse_credentials", "require_basic_auth"]

log = logging.getLogger("celery_flow.server")

AuthDependency: TypeAlias = Callable[..., object] | params.Depends
AuthDependencies: TypeAlias = AuthDependency | Sequence[AuthDependency]

# Set on the handshake's HTTP scope by the guard's endpoint, which FastAPI calls only once every
# dependency has returned.
_ADMITTED = "celery_flow.admitted"


def as_dependencies(auth: AuthDependencies | None) -> list[params.Depends]:
    """`auth_dependency` as a `dependencies=` list: `f` and `Depends(f)` give `[Depends(f)]`;
    a list (any sequence) of either gives one each; None gives `[]`."""
    if auth is None:
        return []
    items = [auth] if callable(auth) or isinstance(auth, params.Depends | str) else list(auth)
    deps: list[params.Depends] = []
    for item in items:
        if isinstance(item, params.Depends) and callable(item.dependency):
            deps.append(item)
        elif callable(item) and not isinstance(item, params.Depends):
            deps.append(Depends(item))
        else:
            raise TypeError(
                f"auth_dependency takes a callable, Depends(callable) or a list of them, not {item!r}"
            )
    return deps


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


class HandshakeGuard:
    """Runs auth dependencies on a WebSocket handshake as FastAPI runs them on a GET of the same URL.

    FastAPI resolves a WebSocket route's dependencies with the `WebSocket`, which a dependency typed on
    `Request` cannot take (the handshake fails with a 500). The guard resolves them through an HTTP route
    instead, on a copy of the handshake's scope: same headers, cookies, query string, session, state,
    and the app's `dependency_overrides` and exception handlers. Only a handshake whose dependencies all
    returned is admitted; a 401 or 403 they answer is sent back as it is, anything else (an exception,
    a parameter FastAPI cannot fill, a redirect) becomes a 403.
    """

    def __init__(self, dependencies: Sequence[params.Depends]) -> None:
        self.dependencies = list(dependencies)
        # One route per app, so each resolves with that app's dependency_overrides, as its REST routes do.
        self._routes: weakref.WeakKeyDictionary[Any, APIRoute] = weakref.WeakKeyDictionary()

    def _route(self, app: Any) -> APIRoute:
        if not hasattr(app, "dependency_overrides"):
            return self._build(None)
        route = self._routes.get(app)
        if route is None:
            route = self._routes[app] = self._build(app)
        return route

    def _build(self, overrides_provider: Any) -> APIRoute:
        def admitted(request: Request) -> Response:
            request.scope[_ADMITTED] = True
            return Response(status_code=status.HTTP_204_NO_CONTENT)

        return APIRoute(
            "/",
            admitted,
            dependencies=self.dependencies,
            dependency_overrides_provider=overrides_provider,
            include_in_schema=False,
        )

    async def admit(self, websocket: WebSocket) -> bool:
        """True if the dependencies admit this handshake; otherwise it has been refused (not accepted)."""
        if not self.dependencies:
            return True
        scheme = {"ws": "http", "wss": "https"}.get(websocket.scope.get("scheme", "ws"), "http")
        scope = {**websocket.scope, "type": "http", "method": "GET", "scheme": scheme}
        answer: list[Message] = []
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if requested:
                return {"type": "http.disconnect"}
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            answer.append(message)

        try:
            await self._route(scope.get("app")).handle(scope, receive, send)
        except Exception:
            log.exception("auth dependency raised on the live WebSocket handshake: refused with 403")
            scope.pop(_ADMITTED, None)
            answer.clear()
        if scope.get(_ADMITTED):
            return True
        await _deny(websocket, answer)
        return False


async def _deny(websocket: WebSocket, answer: list[Message]) -> None:
    """Refuse the handshake with the dependencies' 401/403 response as it was, else a plain 403."""
    start = next((m for m in answer if m["type"] == "http.response.start"), None)
    denial: Response
    if start is not None and start["status"] in (401, 403):
        body = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
        denial = Response(body, status_code=start["status"])
        denial.raw_headers = list(start.get("headers", []))
    else:
        if start is not None:
            log.warning(
                "auth dependency answered %s on the live WebSocket handshake: refused with 403",
                start["status"],
            )
        denial = PlainTextResponse("Forbidden", status_code=status.HTTP_403_FORBIDDEN)
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(denial)
    else:
        # The ASGI server cannot send a response on the handshake: closing before accept refuses it.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION)
