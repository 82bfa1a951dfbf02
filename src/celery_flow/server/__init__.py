"""The celery-flow HTTP server: REST API, live WebSocket, UI, and a mountable FastAPI extension."""

from __future__ import annotations

from celery_flow.server.app import create_app
from celery_flow.server.auth import require_basic_auth
from celery_flow.server.extension import CeleryFlowExtension

__all__ = ["CeleryFlowExtension", "create_app", "require_basic_auth"]
