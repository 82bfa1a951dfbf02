"""Task runs in the process that executes them: `started`, `succeeded` and `rejected` from a wrapper
around Celery's per-task tracer.

Celery runs every task through `task.__trace__`, a function it builds per task in the process that runs tasks:
the consumer builds it for the pools that run tasks in the worker's main process (solo, threads, gevent,
eventlet), and each prefork child builds its own before `worker_process_init`. Wrapping it costs one call per
run, less than dispatching the task_prerun/task_postrun signals it replaces (Celery looks the receivers up
under a lock on every send), and the tracer skips a signal without receivers altogether, so while a process's
tasks run through wrapped tracers those two handlers stay unconnected (hooks.set_traced). They remain the way
for runs this does not see: eager `apply()` calls and pools that build no tracer up front.

`failed` and `retried` still come from their signals: they carry the exception and traceback, and a
signal dispatched only when a task fails costs nothing on the common path.
"""

from __future__ import annotations

import functools
from typing import Any

from celery_flow.tracking.hooks import _log, set_traced, trackers

__all__ = ["trace_through", "untrace"]


def trace_through(app: Any) -> None:
    """Wrap the tracer of every task of `app` built so far (again after Celery rebuilt them, on a consumer
    restart), so that its runs report to whichever tracker `app` has when they run (none: they just run,
    and an `init()` again in a running worker takes over)."""
    key = id(app)
    wrapped = False
    for task in list(app.tasks.values()):
        tracer = task.__trace__
        if tracer is None:
            continue  # not built here: its runs, if any, are reported by the signals
        if getattr(tracer, "celery_flow_app", None) != key:
            task.__trace__ = _tracing(tracer, task, key)
        wrapped = True
    if wrapped:
        set_traced(app, True)


def untrace(app: Any) -> None:
    """Give `app`'s tasks back Celery's own tracers, and their runs back to the signals (a worker
    stopping in a process that goes on, as `start_worker` in a test suite)."""
    for task in list(app.tasks.values()):
        tracer = task.__trace__
        if getattr(tracer, "celery_flow_app", None) == id(app):
            task.__trace__ = tracer.__wrapped__
    set_traced(app, False)


def _tracing(tracer: Any, task: Any, app_key: int) -> Any:
    @functools.wraps(tracer)
    def trace_task(uuid: str, args: Any, kwargs: Any, request: Any = None) -> Any:
        tracker = trackers.get(app_key)
        if tracker is None:
            return tracer(uuid, args, kwargs, request)
        try:
            tracker.on_started(task, uuid, request if request is not None else {})
        except Exception as exc:
            _log.warning("started", "celery-flow: started handler failed (ignored): %r", exc)
        try:
            traced = tracer(uuid, args, kwargs, request)
        except BaseException:
            # Celery's tracer lets only Reject, MemoryError and the like out: the run is over all the same.
            tracker._running.pop(uuid, None)
            raise
        try:
            tracker.on_traced(task, uuid, traced)
        except Exception as exc:
            _log.warning("finished", "celery-flow: finished handler failed (ignored): %r", exc)
        return traced

    trace_task.celery_flow_app = app_key  # type: ignore[attr-defined]
    return trace_task
