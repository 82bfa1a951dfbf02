"""Worker side of the main process: a consumer bootstep announcing `worker.online` (with the task
registry), a `worker.heartbeat` every CELERY_FLOW_HEARTBEAT_INTERVAL seconds and `worker.offline`,
reporting `received` for every task message the consumer takes (and, for pools that run tasks in this
process, wrapping their tracers: tracking.tracer), plus the flushes that keep a worker's last events from
dying with its processes.

Why RECEIVED comes from the bootstep and not Celery's `task_received` signal: the bootstep wraps the
consumer's per-task strategies (the functions Celery calls with each task message), so the event is built
straight from the message headers at the moment the worker takes the message, for one call instead of a signal
dispatch (Celery looks a signal's receivers up under a lock on every send). It also sees what the signal
cannot: a message Celery then refuses (bad ETA, undecodable body) is reported as `rejected` instead of
vanishing. The bootstep starts and stops with the consumer in the worker's main process (in `celery worker`
and in `start_worker` alike), and wraps the strategies again after each consumer restart, when Celery rebuilds
them.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from typing import Any

from celery import bootsteps
from celery.exceptions import InvalidTaskError
from kombu.exceptions import ContentDisallowed, DecodeError

from celery_flow.events import TaskInfo
from celery_flow.tracking.hooks import Tracker, _log, tracker_for_app, trackers
from celery_flow.tracking.tracer import trace_through, untrace

__all__ = ["FlowWorkerStep", "registry_of"]

_DOC_LIMIT = 2000
# Pools that run tasks in the worker's main process (by module name), unlike prefork's children.
_IN_PROCESS_POOLS = frozenset(("solo", "thread", "gevent", "eventlet"))


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
    """Beats through whichever tracker the app has at each beat (an `init()` again replaces it)."""

    def __init__(self, app: Any, interval: float, hostname: str, info: dict[str, Any]) -> None:
        super().__init__(name="celery-flow-heartbeat", daemon=True)
        self.app = app
        self.interval = interval
        self.hostname = hostname
        self.info = info
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            tracker = tracker_for_app(self.app)
            if tracker is None:
                continue  # between a shutdown() and an init()
            self.interval = tracker.heartbeat_interval
            with contextlib.suppress(Exception):  # never let the heartbeat thread die noisily
                tracker.emit("worker.heartbeat", hostname=self.hostname, pid=os.getpid(), info=self.info,
                             heartbeat_interval=self.interval)  # fmt: skip


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
            if tracker is None:
                return
            hostname = c.hostname
            info = _worker_info(c)
            tracker.runs_tasks_here = info.get("pool") in _IN_PROCESS_POOLS
            # Every start: a consumer restart (lost connection) rebuilds the strategies and tracers.
            receive_through(c.strategies, c.app, hostname)
            if tracker.runs_tasks_here:
                trace_through(c.app)
            if self._online:
                return
            tracker.nodename = hostname
            tracker.publisher.hostname = hostname
            tracker.emit(
                "worker.online",
                hostname=hostname,
                pid=os.getpid(),
                tasks=registry_of(c.app),
                info=info,
                heartbeat_interval=tracker.heartbeat_interval,
            )
            self._online = True
            self._heartbeat = _Heartbeat(c.app, tracker.heartbeat_interval, hostname, info)
            self._heartbeat.start()
        except Exception as exc:  # never break the worker's startup
            _log.warning("bootstep", "celery-flow: worker bootstep failed to start (ignored): %r", exc)

    def stop(self, c: Any) -> None:
        # Consumer restarts (connection loss) call stop() and start() again: stay online across them.
        pass

    def shutdown(self, c: Any) -> None:
        try:
            untrace(c.app)
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
            _log.warning("bootstep", "celery-flow: worker bootstep failed to stop (ignored): %r", exc)


_INVALID_MESSAGE_ERRORS: tuple[type[BaseException], ...] = (InvalidTaskError, ContentDisallowed, DecodeError)


def receive_through(strategies: dict[str, Any], app: Any, hostname: str | None) -> None:
    """Wrap each task strategy of `app`'s consumer so that every message it handles is reported as
    `received` first, to whichever tracker `app` has at that moment (none: the message just passes, and
    an `init()` again in a running worker takes over). A strategy already wrapped is left as it is."""
    for name, strategy in list(strategies.items()):
        if getattr(strategy, "celery_flow_app", None) != id(app):
            strategies[name] = _receiving(strategy, id(app), hostname)


def _receiving(strategy: Any, app_key: int, hostname: str | None) -> Any:
    @functools.wraps(strategy)
    def receive(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> Any:
        tracker = trackers.get(app_key)
        fields = None
        if tracker is not None:
            try:
                fields = tracker.on_message(message, body, hostname)
            except Exception as exc:
                _log.warning("received", "celery-flow: received handler failed (ignored): %r", exc)
        try:
            return strategy(message, body, ack, reject, callbacks, **kwargs)
        except _INVALID_MESSAGE_ERRORS as exc:
            if fields is not None and tracker is not None:
                with contextlib.suppress(Exception):
                    tracker.on_invalid_message(fields, exc)
            raise

    receive.celery_flow_app = app_key  # type: ignore[attr-defined]
    return receive


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
