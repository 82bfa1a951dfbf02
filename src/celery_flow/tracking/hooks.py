"""Turn each lifecycle step into one small event and hand it to the publisher: the Tracker (called by the
Celery signal handlers below and by the worker's wrappers, tracking.worker and tracking.tracer).

Every handler is wrapped so that nothing (a bad value, a bug here, a broker outage) can raise into the
user's task or `apply_async()`; failures are logged, rate limited. The hot path does only cheap work:
read a few attributes, capture (scrub + cap) the arguments and result, append the fields to a deque;
the publisher's thread builds and encodes the events.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from celery_flow.events import EventType
from celery_flow.ratelimit import RateLimitedLog
from celery_flow.settings import TrackingSettings
from celery_flow.tracking.capture import Capturer
from celery_flow.tracking.lineage import (
    chord_callback_id,
    embed_of,
    freeze_callbacks,
    iso_to_epoch,
    links_of,
)
from celery_flow.tracking.plan import plan_of
from celery_flow.tracking.publisher import Publisher
from celery_flow.tracking.scrub import KeyScrubber
from celery_flow.tracking.trace import ROOT_HEADER, TRACE_HEADER, executing_task, publish_trace_id

__all__ = [
    "Tracker",
    "connect_signals",
    "disconnect_signals",
    "set_traced",
    "tracker_for_app",
    "trackers",
]

TRACEBACK_LIMIT = 32_768
# Most tasks received and not yet started that a worker remembers the fields of (ETA tasks wait there).
RECEIVED_LIMIT = 10_000
_log = RateLimitedLog(logging.getLogger("celery_flow.tracking"))

# getpid() is a system call and runs several times per task; the pid is refreshed in forked children.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)

F = TypeVar("F", bound=Callable[..., Any])


class Tracker:
    """Everything one `init(app)` set up: configuration, capture rules and the publisher."""

    def __init__(self, app: Any, settings: TrackingSettings) -> None:
        self.app = app
        self.settings = settings
        self.heartbeat_interval = settings.heartbeat_interval
        scrubber = (
            KeyScrubber(settings.additional_sensitive_keys, settings.safe_keys)
            if settings.scrub_sensitive_data
            else None
        )
        self.capture = Capturer(settings.max_value_size, scrubber)
        self.traceback_limit = max(TRACEBACK_LIMIT, settings.max_value_size)
        self.publisher = Publisher(
            settings.transport_url,
            prefix=settings.prefix,
            # 0 turns the age bound off, as CELERY_FLOW_TTL=0 does for the server.
            ttl=settings.ttl or None,
            buffer_size=settings.buffer_size,
        )
        self.producer_hostname = socket.gethostname()
        # The `info` of `sent` events, shared by all of them (rebuilt in a forked child, for its pid).
        self._info: dict[str, Any] = {}
        self._info_pid = 0
        # Set by the worker bootstep: this process is (the main process of) a worker with this nodename.
        self.nodename: str | None = None
        # Set by the worker bootstep when the pool runs tasks in this process (solo, threads, gevent,
        # eventlet): `received` then keeps the task's identity fields for its `started` event.
        self.runs_tasks_here = False
        # task id -> identity fields, from `received` until `started` (runs_tasks_here only).
        self._received: dict[str, dict[str, Any]] = {}
        # task id -> (the task's identity fields, monotonic start) from `started` until the task ends:
        # `succeeded`/`failed`/`retried` reuse the fields instead of reading the request again, and
        # take their runtime from it.
        self._running: dict[str, tuple[dict[str, Any], float]] = {}
        # In a beat process, while its scheduler sends a run: (that thread's id, the run) (tracking.beat).
        self.beat_run: tuple[int, Any] | None = None

    def emit(self, type_: EventType, **fields: Any) -> None:
        self.publisher.record(type_, time.time(), fields)

    # -- producer -----------------------------------------------------------------------------------
    def on_publish(self, body: Any, headers: dict[str, Any], routing_key: Any) -> None:
        if not isinstance(headers, dict) or "id" not in headers:
            return  # protocol 1 or not a task message: nothing we can describe precisely
        trace_id = publish_trace_id(headers)
        if trace_id:
            headers[TRACE_HEADER] = trace_id
        if self._info_pid != _pid:  # first publish in this process (or in a forked child)
            self._info = {"producer": self.producer_hostname, "pid": _pid}
            self._info_pid = _pid
        fields: dict[str, Any] = {
            "task_id": headers["id"],
            "name": headers.get("shadow") or headers.get("task"),
            "root_id": flow_root(headers),
            "parent_id": headers.get("parent_id"),
            "group_id": headers.get("group"),
            "trace_id": trace_id,
            "queue": routing_key if isinstance(routing_key, str) and routing_key else None,
            "retries": headers.get("retries") or 0,
            "info": self._info,
        }
        eta = headers.get("eta")
        if eta:
            fields["eta"] = iso_to_epoch(eta)
        beat_run = self.beat_run
        if beat_run is not None and beat_run[0] == threading.get_ident():
            fields["schedule"] = beat_run[1]
        expires = headers.get("expires")
        if expires:
            fields["expires"] = iso_to_epoch(expires)
        embed = embed_of(body)
        if embed is not None:
            has_callbacks = embed.get("callbacks") or embed.get("errbacks")
            if has_callbacks:
                freeze_callbacks(embed)
            if has_callbacks or embed.get("chain") or embed.get("chord"):
                fields["links"], fields["link_errors"] = links_of(embed)
                fields["chord_id"] = chord_callback_id(embed.get("chord"))
                fields["plan"] = plan_of(headers["id"], embed, self.errback_runs_inline)
            if self.settings.capture_args:
                fields["args"] = self.capture.args(body[0])
                fields["kwargs"] = self.capture.kwargs(body[1])
        self.publisher.record("sent", time.time(), fields)

    def errback_runs_inline(self, sig: Any) -> bool:
        """Whether a worker calls this link_error signature in its own process instead of sending it:
        Celery's rule (Backend._call_task_errbacks), for a task this app knows."""
        try:
            errback = self.app.signature(sig)
            header = getattr(errback.type, "__header__", None)
            if header is None or isinstance(header, functools.partial):
                return False
            arity = getattr(self.app.backend, "_errback_arity_greater", None)
            if arity is not None:
                return bool(arity(errback, 1))
            from celery.utils.functional import arity_greater

            return bool(arity_greater(header, 1))
        except Exception:  # not registered here: Celery sends it on, as a task
            return False

    # -- worker main process ------------------------------------------------------------------------
    def on_message(self, message: Any, body: Any, hostname: str | None) -> dict[str, Any] | None:
        """A task message the worker's consumer just took (see worker.receiving): `received`, and the
        task's identity fields, or None when the message is not one we can describe."""
        rd = message.headers
        if not rd or "id" not in rd:
            if not isinstance(body, dict) or "id" not in body:
                return None
            rd = body  # protocol 1: everything is in the body
        task_id = rd["id"]
        eta = rd.get("eta")
        fields = {
            "task_id": task_id,
            "name": rd.get("shadow") or rd.get("task"),
            "root_id": rd.get(ROOT_HEADER) or rd.get("root_id"),
            "parent_id": rd.get("parent_id"),
            "group_id": rd.get("group") or rd.get("taskset"),
            "trace_id": rd.get(TRACE_HEADER),
            "retries": rd.get("retries") or 0,
            "eta": iso_to_epoch(eta) if eta else None,
            "queue": (message.delivery_info or {}).get("routing_key"),
            "hostname": self.nodename or hostname,
            "pid": _pid,
        }
        if self.runs_tasks_here:
            # The task will start in this process: its `started` event reuses these fields rather than
            # reading the request again (in a busy worker that is a measurable share of the cost).
            # Decoding the body here costs nothing extra: kombu caches it for Celery's Request.
            payload = body if body is not None else message.payload
            embed = payload[2] if isinstance(payload, (tuple, list)) and len(payload) > 2 else payload
            chord = embed.get("chord") if isinstance(embed, dict) else None
            if chord:
                fields["chord_id"] = chord_callback_id(chord)
            received = self._received
            if len(received) >= RECEIVED_LIMIT:
                received.clear()  # tasks received but never started here (lost connection): forget them
            received[task_id] = fields
        self.publisher.record("received", time.time(), fields)
        return fields

    def on_invalid_message(self, fields: dict[str, Any], exc: BaseException) -> None:
        """Celery refused a message we reported as received (bad ETA, undecodable body): it is rejected."""
        self._received.pop(fields["task_id"], None)
        reason = f"rejected: {self.capture.exception(exc)}"
        self.publisher.record("rejected", time.time(), fields, {"reason": reason})

    def on_revoked(self, request: Any, terminated: bool, expired: bool) -> None:
        self._received.pop(request.id, None)
        reason = "expired" if expired else ("terminated" if terminated else "revoked")
        self.emit(
            "revoked",
            task_id=request.id,
            name=getattr(request, "shadow", None) or getattr(request, "task", None),
            root_id=getattr(request, ROOT_HEADER, None) or getattr(request, "root_id", None),
            parent_id=getattr(request, "parent_id", None),
            group_id=getattr(request, "group", None),
            trace_id=getattr(request, TRACE_HEADER, None),
            retries=getattr(request, "retries", 0) or 0,
            reason=reason,
            hostname=getattr(request, "hostname", None) or self.nodename,
            pid=_pid,
        )

    # -- pool process (where the task body runs) ----------------------------------------------------
    def _task_fields(self, task: Any, task_id: str, req: dict[str, Any] | None = None) -> dict[str, Any]:
        """The identity of a run of `task`, read from its request dict: the one Celery's tracer gets, or
        else the running task's request (a Context, whose `__dict__` holds the message's headers: `.get`
        avoids an AttributeError per absent header)."""
        if req is None:
            req = task.request.__dict__
        if req.get("id") != task_id:
            # Sent from the worker's main process with no task context (hard time limit, worker lost):
            # only the id and name are known here; the earlier events carry the rest.
            return {"task_id": task_id, "name": task.name, "hostname": self.nodename, "pid": _pid}
        fields = {
            "task_id": task_id,
            "name": req.get("shadow") or task.name,
            "root_id": req.get(ROOT_HEADER) or req.get("root_id"),
            "parent_id": req.get("parent_id"),
            "group_id": req.get("group"),
            "trace_id": req.get(TRACE_HEADER),
            "retries": req.get("retries") or 0,
            # The nodename (celery@host): set by the bootstep / worker_process_init; a start_worker test
            # worker's request only knows the bare host name.
            "hostname": self.nodename or req.get("hostname"),
            "pid": _pid,
        }
        chord = req.get("chord")
        if chord:
            fields["chord_id"] = chord_callback_id(chord)
        return fields

    def _identity(
        self, task: Any, task_id: str | None, running: tuple[dict[str, Any], float] | None
    ) -> tuple[dict[str, Any], float | None]:
        """(identity fields, runtime so far) from the task's `_running` entry, else read afresh."""
        if running is not None:
            return running[0], time.monotonic() - running[1]
        return self._task_fields(task, task_id or task.request.id), None

    def on_started(self, task: Any, task_id: str, request: dict[str, Any] | None = None) -> None:
        fields = self._received.pop(task_id, None) if self._received else None
        if fields is None:
            fields = self._task_fields(task, task_id, request)
        self._running[task_id] = (fields, time.monotonic())
        self.publisher.record("started", time.time(), fields)

    def on_finished(self, task: Any, task_id: str, retval: Any, state: str | None) -> None:
        """The end of a run (task_postrun, or the tracer wrapper through on_traced): `succeeded`,
        `rejected`, and the end of the task's `_running` entry whatever its outcome."""
        running = self._running.pop(task_id, None)
        if state != "SUCCESS" and state != "REJECTED":
            return  # failed/retried were reported by their own signals; ignored tasks end silently
        fields, runtime = self._identity(task, task_id, running)
        if state == "SUCCESS":
            result = (
                self.capture.value(retval) if retval is not None and self.settings.capture_result else None
            )
            self.publisher.record("succeeded", time.time(), fields, {"result": result, "runtime": runtime})
            return
        requeue = bool(getattr(retval, "requeue", False))
        why = getattr(retval, "reason", None)
        reason = "requeue" if requeue else "rejected"
        if why is not None:
            reason = f"{reason}: {self.capture.text(str(why), 500)}"
        self.publisher.record("rejected", time.time(), fields, {"reason": reason, "runtime": runtime})

    def on_traced(self, task: Any, task_id: str, traced: Any) -> None:
        """The end of a run through Celery's tracer (see tracking.tracer), from what the tracer returned:
        `(retval, info, runtime, retval repr)`, with `info` None when the task succeeded."""
        retval, info, runtime = traced[0], traced[1], traced[2]
        if info is not None:
            self.on_finished(task, task_id, info.retval, info.state)
        elif runtime is not None:
            self.on_finished(task, task_id, retval, "SUCCESS")
        elif retval is not None:
            # An error outside the task body before its request existed (kwargs that are not a mapping):
            # Celery sends no task_failure for it, only returns its ExceptionInfo.
            self.on_failed(task, task_id, getattr(retval, "exception", retval), retval)
            self.on_finished(task, task_id, None, None)
        else:
            # Skipped: a redelivered task that already succeeded (worker_deduplicate_successful_tasks).
            self.on_finished(task, task_id, None, None)

    def on_failed(self, task: Any, task_id: str | None, exception: Any, einfo: Any) -> None:
        from celery.exceptions import Reject

        if isinstance(exception, Reject):
            return  # reported as `rejected` by on_finished (the run ended in state REJECTED)
        fields, runtime = self._identity(task, task_id, self._running.get(task_id) if task_id else None)
        self.publisher.record(
            "failed",
            time.time(),
            fields,
            {
                "exception": self.capture.exception(exception),
                "traceback": self._traceback(einfo),
                "runtime": runtime,
            },
        )

    def on_retried(self, task: Any, request: Any, reason: Any, einfo: Any) -> None:
        task_id = getattr(request, "id", None)
        fields, runtime = self._identity(task, task_id, self._running.get(task_id) if task_id else None)
        text = (
            self.capture.exception(reason)
            if isinstance(reason, BaseException)
            else self.capture.text(str(reason))
        )
        self.publisher.record(
            "retried",
            time.time(),
            fields,
            {"reason": text, "exception": text, "traceback": self._traceback(einfo), "runtime": runtime},
        )

    def _traceback(self, einfo: Any) -> str | None:
        text = getattr(einfo, "traceback", None)
        if not isinstance(text, str):
            return None
        return self.capture.text(text, self.traceback_limit)


def flow_root(headers: dict[str, Any]) -> str | None:
    """The root of the flow this message belongs to, recorded in the ROOT_HEADER when it is not Celery's.

    Celery gives every member of a group or chord applied outside a task its own `root_id` (itself), so
    one `group(...).apply_async()` from a web view would be N unrelated flows. Such members get the
    group id as their flow root instead, and everything they cause inherits it through the header (as a
    trace id does). Celery's own `root_id` header is never changed.
    """
    root = headers.get(ROOT_HEADER)
    if root is None:
        # Celery sets parent_id whenever a worker task publishes: without it there is no task to inherit
        # from, and the (cache-cold, several calls deep) task stack lookup is skipped.
        task = executing_task() if headers.get("parent_id") else None
        if task is not None:
            root = getattr(task.request, ROOT_HEADER, None)
        elif headers.get("group") and headers.get("root_id") in (None, headers.get("id")):
            root = headers["group"]
        if root:
            headers[ROOT_HEADER] = root
    return root or headers.get("root_id")


# -- registry of trackers -------------------------------------------------------------------------
trackers: dict[int, Tracker] = {}
_last: list[Tracker] = []


def tracker_for_app(app: Any) -> Tracker | None:
    return trackers.get(id(app))


def _publish_tracker() -> Tracker | None:
    if len(trackers) == 1:
        return next(iter(trackers.values()))
    if not trackers:
        return None
    from celery._state import get_current_app

    found = trackers.get(id(get_current_app()))
    return found if found is not None else (_last[-1] if _last else None)


def _task_tracker(task: Any) -> Tracker | None:
    if task is None or not trackers:
        return None
    # `_app` is set on tasks bound to an app (@app.task): a plain attribute, cheaper than the `app` property.
    return trackers.get(id(getattr(task, "_app", None) or task.app))


def _guard(kind: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            try:
                func(*args, **kwargs)
            except Exception as exc:
                _log.warning(kind, "celery-flow: %s handler failed (ignored): %r", kind, exc)

        return cast(F, wrapper)

    return decorate


@_guard("before_task_publish")
def _before_task_publish(
    sender: Any = None, body: Any = None, headers: Any = None, routing_key: Any = None, **_: Any
) -> None:
    tracker = _publish_tracker()
    if tracker is not None:
        tracker.on_publish(body, headers, routing_key)


# The two handlers every task runs through guard themselves inline (one call layer less than _guard)
# and find their tracker inline: in a busy worker this code runs cache-cold, where each call counts.
def _task_prerun(sender: Any = None, task_id: Any = None, task: Any = None, **_: Any) -> None:
    try:
        tracker = trackers.get(id(getattr(task, "_app", None) or task.app)) if trackers else None
        if tracker is not None:
            tracker.on_started(task, task_id)
    except Exception as exc:
        _log.warning("task_prerun", "celery-flow: task_prerun handler failed (ignored): %r", exc)


def _task_postrun(
    sender: Any = None, task_id: Any = None, retval: Any = None, state: Any = None, **_: Any
) -> None:
    try:
        tracker = trackers.get(id(getattr(sender, "_app", None) or sender.app)) if trackers else None
        if tracker is not None:
            tracker.on_finished(sender, task_id, retval, state)
    except Exception as exc:
        _log.warning("task_postrun", "celery-flow: task_postrun handler failed (ignored): %r", exc)


@_guard("task_failure")
def _task_failure(
    sender: Any = None, task_id: Any = None, exception: Any = None, einfo: Any = None, **_: Any
) -> None:
    tracker = _task_tracker(sender)
    if tracker is not None:
        tracker.on_failed(sender, task_id, exception, einfo)


@_guard("task_retry")
def _task_retry(
    sender: Any = None, request: Any = None, reason: Any = None, einfo: Any = None, **_: Any
) -> None:
    tracker = _task_tracker(sender)
    if tracker is not None:
        tracker.on_retried(sender, request, reason, einfo)


@_guard("task_revoked")
def _task_revoked(
    sender: Any = None, request: Any = None, terminated: Any = False, expired: Any = False, **_: Any
) -> None:
    tracker = _task_tracker(sender) if sender is not None else _publish_tracker()
    if tracker is not None and request is not None:
        tracker.on_revoked(request, bool(terminated), bool(expired))


# Apps whose tasks this process runs through wrapped tracers (tracking.tracer): while there are any,
# task_prerun and task_postrun stay unconnected, so Celery's tracer skips them altogether.
_traced_apps: set[int] = set()


def _handlers() -> list[tuple[str, Callable[..., None]]]:
    return [
        ("before_task_publish", _before_task_publish),
        ("task_prerun", _task_prerun),
        ("task_failure", _task_failure),
        ("task_retry", _task_retry),
        ("task_postrun", _task_postrun),
        ("task_revoked", _task_revoked),
    ]


def connect_signals() -> None:
    """Connect the handlers every tracked process needs; task_prerun/task_postrun only while no task
    runs through a wrapped tracer here (they still report eager runs and pools we do not know)."""
    from celery import signals

    runs = not _traced_apps
    for name, handler in _handlers():
        signal = getattr(signals, name)
        if runs or handler not in (_task_prerun, _task_postrun):
            signal.connect(handler, weak=False, dispatch_uid=f"celery_flow.{name}")
        else:
            signal.disconnect(handler, dispatch_uid=f"celery_flow.{name}")


def disconnect_signals() -> None:
    from celery import signals

    for name, handler in _handlers():
        getattr(signals, name).disconnect(handler, dispatch_uid=f"celery_flow.{name}")


def set_traced(app: Any, traced: bool) -> None:
    """Record whether `app`'s tasks run through wrapped tracers in this process, and (re)connect the
    signals to match while anything is tracked."""
    if traced:
        _traced_apps.add(id(app))
    else:
        _traced_apps.discard(id(app))
    if trackers:
        connect_signals()
