"""`McpEndpoint`: `/mcp` as a route of the extension's router, behind its auth dependencies, and the
MCP session manager started and stopped by the extension's lifespan.

The route is a FastAPI route like any other (so the auth dependency runs first, and a user's app that
includes the router under a prefix gets `/prefix/mcp`); once admitted, the request goes to the SDK's
ASGI handler untouched. Without the `mcp` extra the route answers 501 naming the fix, and the server
logs one line at start: the rest of the server never imports the SDK.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from celery_flow.store.base import Store

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

log = logging.getLogger("celery_flow.mcp")

MISSING = "the MCP endpoint needs the `mcp` package: pip install 'celery-flow[mcp]'"


class _Handover(Response):
    """A response that lets an ASGI app answer the request itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def sdk_missing(exc: ImportError) -> bool:
    """Whether `exc` says the MCP SDK (or a package it needs) is not installed."""
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in {
        "mcp",
        "mcp_types",
        "httpx2",
    }


class McpEndpoint:
    """Serves `/mcp` over the store the REST routes read; `running()` belongs in the app's lifespan."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self.store = store
        self.manager: StreamableHTTPSessionManager | None = None
        self.missing: str | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start the session manager (a fresh one each time: one runs only once), stop it on exit."""
        try:
            from celery_flow.server.mcp.protocol import session_manager
        except ImportError as exc:
            if not sdk_missing(exc):
                raise
            self.missing = MISSING
            log.info("/mcp is off: %s", MISSING)
            yield
            return
        manager = session_manager(self.store)
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def handle(self, request: Request) -> Response:
        if self.missing is not None:
            return JSONResponse({"detail": self.missing}, status_code=501)
        manager = self.manager
        if manager is None:
            return JSONResponse({"detail": "celery-flow is not started: enter extension.lifespan"}, 503)
        if request.method != "POST":
            # Stateless: no session to end (DELETE), no stream to hold open (GET); the spec's answer is 405.
            return JSONResponse({"detail": "POST MCP messages to this URL: it keeps no session or stream"},
                                status_code=405, headers={"Allow": "POST"})  # fmt: skip
        # MCP clients are programs, not web pages: a browser's request (it sends Origin) could only come
        # from a page rebinding its own host name to this server, so it is refused.
        if "origin" in request.headers:
            return JSONResponse({"detail": "browser requests (with an Origin header) are refused"}, 403)
        return _Handover(manager.handle_request)
