"""The celery-flow HTTP server: REST API, live WebSocket, UI, and a mountable FastAPI extension.

The names are imported lazily: `celery` loads the `flow` command plugin (celery_flow.cli, which reads
celery_flow.server.config) on every invocation, `celery worker` included, and must not pay for importing
FastAPI and the whole server each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery_flow.server.app import create_app
    from celery_flow.server.auth import require_basic_auth
    from celery_flow.server.extension import CeleryFlowExtension

__all__ = ["CeleryFlowExtension", "create_app", "require_basic_auth"]

_LAZY = {
    "create_app": "celery_flow.server.app",
    "require_basic_auth": "celery_flow.server.auth",
    "CeleryFlowExtension": "celery_flow.server.extension",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
