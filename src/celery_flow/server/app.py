"""`create_app()`: the standalone server, built from the same extension a user would mount."""

from __future__ import annotations

import atexit
from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from celery_flow import __version__
from celery_flow.consumer import Sink
from celery_flow.export import otlp_sink, resolve_otlp_endpoint
from celery_flow.server.auth import require_basic_auth
from celery_flow.server.config import resolve
from celery_flow.server.extension import API_DESCRIPTION, API_TITLE, CeleryFlowExtension
from celery_flow.store import open_store
from celery_flow.store.base import Store
from celery_flow.transport.base import ConfigError


def create_app(
    broker_url: str | None = None,
    store: str | Store | None = None,
    basic_auth: tuple[str, str] | None = None,
    embedded_consumer: bool = True,
    prefix: str | None = None,
    ttl: float | None = None,
    max_tasks: int | None = None,
    sinks: Sequence[Sink] = (),
    store_url: str | None = None,
) -> FastAPI:
    """The UI at `/`, the API under `/api`, guarded by basic auth when credentials are given."""
    ext = CeleryFlowExtension(
        broker_url=broker_url,
        store=store,
        auth_dependency=require_basic_auth(*basic_auth) if basic_auth else None,
        embedded_consumer=embedded_consumer,
        prefix=prefix,
        ttl=ttl,
        max_tasks=max_tasks,
        sinks=sinks,
        store_url=store_url,
    )
    # FastAPI's own docs/openapi routes are off: the extension serves them behind the auth dependency.
    app = FastAPI(
        title=API_TITLE,
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=ext.lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    # Flow graphs of thousands of tasks are megabytes of repetitive JSON: compress them (≈10x).
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=4)
    app.include_router(ext.router)
    app.state.celery_flow = ext
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (the CLI's `--reload`): everything from CELERY_FLOW_* variables,
    and OpenTelemetry export from the standard OTEL_EXPORTER_OTLP_* ones, as `celery-flow server` does."""
    cfg = resolve()
    store: str | Store = cfg.store_url
    sinks: list[Sink] = []
    try:
        export = resolve_otlp_endpoint(None) is not None
    except ConfigError:
        export = True  # otlp_sink logs why export stays off
    if export:
        # The exporter reads finished tasks back from a store object: open it here, for the server too.
        # Closed at exit after the exporter, whose close otlp_sink registers later (atexit runs LIFO).
        opened = open_store(cfg.store_url)
        atexit.register(opened.close)
        exporter = otlp_sink(opened, None)
        store, sinks = opened, [exporter] if exporter is not None else []
    return create_app(
        broker_url=cfg.broker_url,
        store=store,
        store_url=cfg.store_url,
        sinks=sinks,
        basic_auth=cfg.basic_auth,
        embedded_consumer=cfg.embedded_consumer,
        prefix=cfg.prefix,
        ttl=cfg.ttl,
        max_tasks=cfg.max_tasks,
    )
