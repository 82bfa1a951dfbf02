"""`create_app()`: the standalone server, built from the same extension a user would mount."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware

from celery_flow import __version__
from celery_flow.consumer import Sink
from celery_flow.server.auth import require_basic_auth
from celery_flow.server.config import ServerConfig, embedded
from celery_flow.server.extension import API_DESCRIPTION, API_TITLE, CeleryFlowExtension
from celery_flow.store.base import Store


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
    config: ServerConfig | None = None,
) -> FastAPI:
    """The UI at `/`, the API under `/api`, guarded by basic auth when credentials are given.

    The settings are CeleryFlowExtension's (its docstring), or a resolved `config` (server.config) in
    their place, basic auth included. `store` may still be a Store object to use with a `config`.
    """
    if config is None:
        url = store if isinstance(store, str) else store_url
        config = embedded(broker_url, url, prefix, ttl, max_tasks, embedded_consumer, basic_auth)
    ext = CeleryFlowExtension(
        store=store if store is not None and not isinstance(store, str) else None,
        store_url=store_url,
        auth_dependency=require_basic_auth(*config.basic_auth) if config.basic_auth else None,
        sinks=sinks,
        config=config,
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
    """Factory for `uvicorn --factory` (the CLI's `--reload`): the config the CLI resolved, handed over in
    CELERY_FLOW_SERVER_CONFIG, else resolved from CELERY_FLOW_* variables (and OpenTelemetry export from
    OTEL_EXPORTER_OTLP_*) as `celery-flow server` does."""
    return create_app(config=ServerConfig.from_env())
