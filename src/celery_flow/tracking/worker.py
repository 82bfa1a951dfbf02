"""Worker lifecycle: a consumer bootstep announcing `worker.online` (with the task registry), a
`worker.heartbeat` every CELERY_FLOW_HEARTBEAT_INTERVAL seconds and `worker.offline`, plus the flushes
that keep a worker's last events from dying with its processes.

Why a bootstep for the worker and a signal for RECEIVED: the consumer bootstep starts and stops with
the consumer in the worker's main process (in `celery worker` and in `start_worker` alike), which is
exactly the worker's lifetime. RECEIVED uses `task_received`, which Celery sends from the default task
strategy in that same main process at the moment a message is accepted (after the revoked/expired check,
before ETA scheduling); wrapping the strategy in a bootstep would hook the same point in a more fragile way.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
from typing import Any

from celery import bootsteps

from celery_flow.events import TaskInfo
from celery_flow.tracking.hooks import Tracker, tracker_for_app

__all__ = ["FlowWorkerStep", "registry_of"]

_DOC_LIMIT = 2000


def registry_of(app: Any) -> list[TaskInfo]:
    """Every user task registered in `app` with its call signature and docstring."""
    out: list[TaskInfo] = []
    for name in sorted(app.tasks.keys()):
        if name.startswith("celery."):
            continue
        task = app.tasks[name]
        signature = _signature(task.run)
        doc = inspect.getdoc(task.run) or None
        if doc and len(doc) > _DOC_LIMIT:
            doc = doc[:_DOC_LIMIT] + "…"
        out.append(TaskInfo(name=name, signature=signature, doc=doc))
    return out


class _Raw:
    """An annotation kept as source text (`from __future__ import annotations`), shown unquoted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _signature(func: Any) -> str | None:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    params = [
        p.replace(annotation=_Raw(p.annotation)) if isinstance(p.annotation, str) else p
        for p in sig.parameters.values()
    ]
    ret = sig.return_annotation
    return str(sig.replace(parameters=params, return_annotation=_Raw(ret) if isinstance(ret, str) else ret))


class _Heartbeat(threading.Thread):
    def __init__(self, tracker: Tracker, hostname: str, info: dict[str, Any]) -> None:
        super().__init__(name="celery-flow-heartbeat", daemon=True)
        self.tracker = tracker
        self.hostname = hostname
        self.info = info
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.tracker.heartbeat_interval):
            with contextlib.suppress(Exception):  # never let the heartbeat thread die noisily
                self.tracker.emit("worker.heartbeat", hostname=self.hostname, pid=os.getpid(), info=self.info)


class FlowWorkerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: worker.online / heartbeat / offline for the worker it runs in."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._heartbeat: _Heartbeat | None = None
        self._online = False

    def _tracker(self, c: Any) -> Tracker | None:
        return tracker_for_app(c.app)

    def start(self, c: Any) -> None:
        try:
            tracker = self._tracker(c)
            if tracker is None or self._online:
                return
            hostname = c.hostname
            tracker.nodename = hostname
            tracker.publisher.hostname = hostname
            info = _worker_info(c)
            tracker.emit(
                "worker.online",
                hostname=hostname,
                pid=os.getpid(),
                tasks=registry_of(c.app),
                info=info,
            )
            self._online = True
            self._heartbeat = _Heartbeat(tracker, hostname, info)
            self._heartbeat.start()
        except Exception as exc:  # never break the worker's startup
            from celery_flow.tracking.hooks import _log

            _log.warning("bootstep", "celery-flow: worker bootstep failed to start (ignored): %r", exc)

    def stop(self, c: Any) -> None:
        # Consumer restarts (connection loss) call stop() and start() again: stay online across them.
        pass

    def shutdown(self, c: Any) -> None:
        try:
            if self._heartbeat is not None:
                self._heartbeat.stopped.set()
                self._heartbeat = None
            tracker = self._tracker(c)
            if tracker is None or not self._online:
                return
            self._online = False
            tracker.emit("worker.offline", hostname=c.hostname, pid=os.getpid(), tasks=None)
            tracker.publisher.flush(2.0)
        except Exception as exc:
            from celery_flow.tracking.hooks import _log

            _log.warning("bootstep", "celery-flow: worker bootstep failed to stop (ignored): %r", exc)


def _worker_info(c: Any) -> dict[str, Any]:
    import celery

    info: dict[str, Any] = {"celery": celery.__version__}
    with contextlib.suppress(Exception):  # informational only
        pool = c.pool
        info["pool"] = type(pool).__module__.rsplit(".", 1)[-1] if pool is not None else None
        info["concurrency"] = getattr(pool, "limit", None) or getattr(c.controller, "concurrency", None)
        queues = c.task_consumer.queues if c.task_consumer is not None else []
        info["queues"] = sorted(q.name for q in queues)
    return info
