"""`CeleryFlowExtension`: the whole server (REST, live WebSocket, UI, metrics) as one mountable router.

Standalone (`create_app()`) and embedded in a user's FastAPI app use this same object, so there is one
way to do each thing:

    flow = CeleryFlowExtension(broker_url="redis://...", store="sqlite:///flow.db",
                               auth_dependency=require_basic_auth("admin", "s3cret"))
    app = FastAPI(lifespan=flow.lifespan)
    app.include_router(flow.router, prefix="/flow")

`.lifespan` opens the store, starts the embedded consumer thread, the live poller and the MCP endpoint
(`/mcp`), and undoes all of it on shutdown, in the order server/runtime.py owns. `auth_dependency`
guards every route, the live WebSocket's handshake and `/mcp` included, and takes what FastAPI's
`dependencies=` takes: `require_admin`, `Depends(require_admin)`, or a list of them. The dependency
may be typed on `Request`, async or not, with sub-dependencies (`Depends`, `Header`, `Cookie`): on the
handshake it sees the handshake's headers, cookies and query string, and a connection it does not admit
is refused with its 401/403 (any other failure: 403) before the socket opens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response

from celery_flow import __version__
from celery_flow.consumer import Sink
from celery_flow.flow.graph import build_graph
from celery_flow.server import spa
from celery_flow.server.api import build_api_router
from celery_flow.server.auth import AuthDependencies, HandshakeGuard, as_dependencies
from celery_flow.server.config import ServerConfig, embedded
from celery_flow.server.health import ConsumerHealth, HealthMonitor
from celery_flow.server.live import LiveFilter, LiveHub
from celery_flow.server.mcp.endpoint import McpEndpoint
from celery_flow.server.metrics import (
    CONTENT_TYPE,
    ScheduleCollector,
    TaskCollector,
    metrics_registry,
    render,
)
from celery_flow.server.runtime import Runtime
from celery_flow.settings import DEFAULT_GROUP
from celery_flow.store.base import Store, StoreError

log = logging.getLogger("celery_flow.server")

API_TITLE = "celery-flow"
API_DESCRIPTION = "Celery workflow observability: tasks, flows, graphs, traces, workers, registry."


class CeleryFlowExtension:
    """The celery-flow server as a router plus a lifespan; see the module docstring for usage.

    `broker_url`, `prefix` and `store` left unset come from CELERY_FLOW_BROKER_URL, CELERY_FLOW_PREFIX
    and CELERY_FLOW_STORE (then the defaults); without a broker there is no embedded consumer. `ttl` and
    `max_tasks` are the embedded consumer's retention (None keeps everything). A resolved `config`
    (server.config) replaces all of these.
    """

    def __init__(
        self,
        broker_url: str | None = None,
        store: str | Store | None = None,
        auth_dependency: AuthDependencies | None = None,
        embedded_consumer: bool = True,
        prefix: str | None = None,
        group: str = DEFAULT_GROUP,
        ttl: float | None = None,
        max_tasks: int | None = None,
        live_interval: float = 0.25,
        live_queue_size: int = 256,
        serve_ui: bool = True,
        sinks: Sequence[Sink] = (),
        store_url: str | None = None,
        static_dir: Path | None = None,
        config: ServerConfig | None = None,
    ) -> None:
        store_object = store if store is not None and not isinstance(store, str) else None
        if config is None:
            url = store if isinstance(store, str) else store_url
            config = embedded(broker_url, url, prefix, ttl, max_tasks, embedded_consumer)
        self.config = config
        self.broker_url = config.broker_url
        self.prefix = config.prefix
        self.group = group
        # A store object handed over is known by the URL given with it, if any.
        self.store_url = store_url if store_object is not None else config.store_url
        # Where the built UI lives (default: the copy shipped in the package, web/static/).
        self.static_dir = static_dir
        self.runtime = Runtime(config, store=store_object, sinks=sinks, group=group)
        self.hub = LiveHub(self._get_store, self._live_status, interval=live_interval,
                           queue_size=live_queue_size)  # fmt: skip
        self.health = HealthMonitor(
            store=self._get_store,
            store_url=self.store_url,
            broker_url=config.broker_url,
            prefix=config.prefix,
            consumer_status=self._consumer_health,
            live_clients=lambda: len(self.hub.clients),
            group=group,
        )
        self.auth_dependencies = as_dependencies(auth_dependency)
        # `/mcp`: the read-only MCP server over the same store (server/mcp/), behind the same auth.
        self.mcp = McpEndpoint(self._get_store)
        self.router = self._build_router(serve_ui)

    # ---- state the routes read -----------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self._get_store()

    def _get_store(self) -> Store:
        store = self.runtime.store
        if store is None:
            raise StoreError(
                "celery-flow is not started: pass lifespan=extension.lifespan to FastAPI() "
                "(or enter it from your own lifespan)"
            )
        return store

    def _consumer_health(self) -> ConsumerHealth:
        runner = self.runtime.consumer
        if runner is None:
            return ConsumerHealth(mode="external", status="external",
                                  detail="events are folded by a separate `celery-flow consume`")  # fmt: skip
        return runner.health()

    async def _live_status(self) -> tuple[str, str | None]:
        report = await anyio.to_thread.run_sync(self.health.report)
        return report.status, report.detail

    # ---- lifespan ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[None]:
        """Use as `FastAPI(lifespan=ext.lifespan)` or `async with ext.lifespan(app):` in your own."""
        async with self.runtime.serving(self.hub, closing=[self.health.close]), self.mcp.running():
            yield

    # ---- routes --------------------------------------------------------------------------------

    def _build_router(self, serve_ui: bool) -> APIRouter:
        router = APIRouter(dependencies=self.auth_dependencies)
        # The WebSocket is not under `router`: FastAPI would call the dependencies with the WebSocket,
        # which one typed on Request cannot take. The guard runs them on its handshake instead.
        sockets = APIRouter()
        guard = HandshakeGuard(self.auth_dependencies)
        api = build_api_router(self._get_store, lambda: self.health, build_graph)
        router.include_router(api)
        api_routes = list(api.routes)
        schema: dict[str, Any] = {}

        @router.get("/api/openapi.json", include_in_schema=False)
        def openapi(request: Request) -> JSONResponse:
            if not schema:
                schema.update(get_openapi(title=API_TITLE, version=__version__,
                                          description=API_DESCRIPTION, routes=api_routes))  # fmt: skip
            # Paths are relative to the mount point; `servers` says where that is in this app.
            root = spa.mount_root(request, "api/openapi.json")
            return JSONResponse({**schema, "servers": [{"url": root or "/"}]})

        @router.get("/api/docs", include_in_schema=False)
        def docs() -> HTMLResponse:
            # Relative URL: works at any mount point.
            return get_swagger_ui_html(openapi_url="openapi.json", title=f"{API_TITLE} API")

        # This server's own registry, not prometheus_client's global one (see server/metrics.py).
        tasks = TaskCollector(lambda: self.store.all_time(), self.config.metrics_max_names)
        beat = ScheduleCollector(lambda: self.store.schedules(recent=0))
        registry = metrics_registry(
            self.health.report, lambda: (self.hub.pushed, self.hub.slow_disconnects), tasks, beat
        )

        @router.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(render(registry), media_type=CONTENT_TYPE)

        router.add_api_route("/mcp", self.mcp.handle, methods=["GET", "POST", "DELETE"],
                             include_in_schema=False)  # fmt: skip

        @sockets.websocket("/api/live")
        async def live(
            websocket: WebSocket,
            root_id: Annotated[str | None, Query(max_length=255)] = None,
            trace_id: Annotated[str | None, Query(max_length=255)] = None,
        ) -> None:
            if not await guard.admit(websocket):
                return
            await self.hub.serve(websocket, LiveFilter(root_id=root_id, trace_id=trace_id))

        if serve_ui:

            @router.get("/", include_in_schema=False)
            def ui_root(request: Request) -> Response:
                return spa.serve(request, "", self.static_dir)

            @router.get("/{path:path}", include_in_schema=False)
            def ui(request: Request, path: str) -> Response:
                return spa.serve(request, path, self.static_dir)

        whole = APIRouter()
        whole.include_router(router)
        whole.include_router(sockets)
        return whole
