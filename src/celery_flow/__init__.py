"""celery-flow: see what happened in your Celery workflows.

Public API: `init(app)` to start tracking, `shutdown(app)` to stop it, `trace()` to give everything a
request causes one trace id, `current_trace_id()` to read it (inside a task too).

The names are resolved lazily so that `import celery_flow.events` (the server does this) never loads
the tracking code and its Celery signal handlers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "current_trace_id", "init", "shutdown", "trace"]

if TYPE_CHECKING:
    from celery_flow.tracking import init, shutdown
    from celery_flow.tracking.trace import current_trace_id, trace

_TRACKING = frozenset({"init", "shutdown"})
_TRACE = frozenset({"trace", "current_trace_id"})


def __getattr__(name: str) -> Any:
    if name in _TRACKING:
        from celery_flow import tracking

        return getattr(tracking, name)
    if name in _TRACE:
        # trace ids need no Celery signal handlers: a web process may use them without init().
        # Import the module by its dotted name: `celery_flow.tracking.trace` as an attribute of the
        # package is the `trace` class that tracking/__init__ re-exports, not the module.
        from celery_flow.tracking.trace import current_trace_id, trace

        return trace if name == "trace" else current_trace_id
    raise AttributeError(f"module 'celery_flow' has no attribute {name!r}")
