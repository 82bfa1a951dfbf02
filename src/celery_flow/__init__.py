"""celery-flow: see what happened in your Celery workflows.

Public API: `init(app)` to start tracking, `shutdown(app)` to stop it.

The names are resolved lazily so that `import celery_flow.events` (the server does this) never loads
the tracking code and its Celery signal handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "init", "shutdown"]

if TYPE_CHECKING:
    from celery_flow.tracking import init, shutdown


def __getattr__(name: str) -> Any:
    if name in {"init", "shutdown"}:
        from celery_flow import tracking

        return getattr(tracking, name)
    raise AttributeError(f"module 'celery_flow' has no attribute {name!r}")
