"""`create_app()`: the standalone server, built from the same extension a user would mount."""

from __future__ import annotations

import os

from fastapi import FastAPI

from celery_flow import __version__
from celery_flow.server.auth import parse_credentials, require_basic_auth
from celery_flow.server.extension import API_DESCRIPTION, API_TITLE, CeleryFlowExtension
from celery_flow.settings import DEFAULT_PREFIX, env_value, parse_bool, parse_positive_int
from celery_flow.store.base import Store


def create_app(
    broker_url: str | None = None,
    store: str | Store | None = None,
    basic_auth: tuple[str, str] | None = None,
    embedded_consumer: bool = True,
    prefix: str = DEFAULT_PREFIX,
    ttl: float | None = None,
    max_tasks: int | None = None,
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
    app.include_router(ext.router)
    app.state.celery_flow = ext
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (the CLI's `--reload`): everything from CELERY_FLOW_* variables."""
    raw_auth = os.environ.get("CELERY_FLOW_BASIC_AUTH")
    return create_app(
        broker_url=os.environ.get("CELERY_FLOW_BROKER_URL") or None,
        store=os.environ.get("CELERY_FLOW_STORE") or None,
        basic_auth=parse_credentials(raw_auth) if raw_auth else None,
        embedded_consumer=env_value("EMBEDDED_CONSUMER", None, True, parse_bool),
        prefix=os.environ.get("CELERY_FLOW_PREFIX") or DEFAULT_PREFIX,
        ttl=env_value("TTL", None, None, lambda raw: float(parse_positive_int(raw))),
        max_tasks=env_value("MAX_TASKS", None, None, parse_positive_int),
    )
