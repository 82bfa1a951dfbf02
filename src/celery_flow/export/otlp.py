"""OpenTelemetry export: every finished task becomes one span, sent over OTLP/HTTP (protobuf).

Why spans are built by hand (`ReadableSpan` with explicit `SpanContext`s) rather than through a tracer:
a tracer picks random span ids and "now" as timestamps, but a task's span has to carry the task's own
start/end times and be referenced by its children, which may be exported before or after it (events
arrive in any order, a flow may span hours). So ids are derived deterministically from task ids, and a
parent is named by id without having to be exported first.

Why an own queue and thread: the consumer calls this sink right after each store commit; reading the
task back and talking HTTP to a collector must never slow or block ingest. The queue is bounded: when
it is full, ids are dropped and counted (`stats()`); exporter failures are counted and logged at most
once a minute.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from celery_flow import __version__
from celery_flow.flow.model import TERMINAL_STATES, TaskDetail
from celery_flow.ratelimit import RateLimit, RateLimitedLog
from celery_flow.store.base import Store

__all__ = ["OtlpExporter", "span_id_for", "task_span", "trace_id_for"]

log = logging.getLogger("celery_flow.export.otlp")

_HEX32 = re.compile(r"[0-9a-f]{32}")
_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1
# "ValueError: boom", "ValueError('boom')", "pkg.mod.Error" -> type and message.
_EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?::\s*(?P<colon>.*)|\((?P<paren>.*)\))?\s*$", re.DOTALL)
_MAX_ATTRIBUTE = 4096


def span_id_for(task_id: str) -> int:
    """A stable, non-zero 64-bit span id for a task id, so children can name their parent's span."""
    value = int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(), "big")
    return value or 1


def trace_id_for(task: TaskDetail) -> int:
    """The 128-bit OpenTelemetry trace id of a task's span.

    A celery-flow trace id that is already a W3C trace id (32 lowercase hex, e.g. taken from a
    `traceparent` header by the middleware) is used as is, so the task spans land in the user's own
    OpenTelemetry trace of that request. Any other trace id is hashed, so every task of one celery-flow
    trace still shares one OpenTelemetry trace. Without a trace id the flow's root id decides.
    """
    trace_id = (task.trace_id or "").strip().lower()
    if _HEX32.fullmatch(trace_id) and int(trace_id, 16):
        return int(trace_id, 16)
    key = trace_id or task.root_id or task.task_id
    if not trace_id:
        try:
            value = uuid.UUID(key).int
        except ValueError:
            value = 0
        if value:
            return value
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "big") & _MASK128
    return value or 1


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)


def _split_exception(text: str) -> tuple[str, str]:
    match = _EXCEPTION.match(text.splitlines()[0] if text.strip() else text)
    if match is None:
        return "Exception", text
    message = match.group("colon") or match.group("paren") or ""
    return match.group(1), message.strip("'\"") if match.group("paren") else message


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unknown values (None) and cap strings: attributes must be primitive and reasonably small."""
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str) and len(value) > _MAX_ATTRIBUTE:
            value = value[:_MAX_ATTRIBUTE] + "…"
        cleaned[key] = value
    return cleaned


def task_span(
    task: TaskDetail, resource: Resource | None = None, scope: InstrumentationScope | None = None
) -> ReadableSpan:
    """The span of one finished task (OpenTelemetry messaging semantic conventions, `process` span)."""
    trace_id = trace_id_for(task)
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, span_id_for(task.task_id), is_remote=False, trace_flags=flags)
    parent_task = task.parent_id if task.parent_id and task.parent_id != task.task_id else None
    parent = (
        SpanContext(trace_id, span_id_for(parent_task), is_remote=True, trace_flags=flags)
        if parent_task
        else None
    )

    start = task.started_at or task.received_at or task.sent_at or task.finished_at or task.updated_at or 0.0
    end = task.finished_at or task.updated_at or start
    start = min(start, end)

    queued = task.started_at - task.sent_at if task.started_at and task.sent_at else None
    attributes = _clean(
        {
            "messaging.system": "celery",
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.message.id": task.task_id,
            "messaging.destination.name": task.queue,
            "messaging.client.id": task.hostname,
            "celery.task.name": task.name,
            "celery.task_id": task.task_id,
            "celery.root_id": task.root_id,
            "celery.parent_id": parent_task,
            "celery.group_id": task.group_id,
            "celery.chord_id": task.chord_id,
            "celery.hostname": task.hostname,
            "celery.pid": task.pid,
            "celery.state": task.state,
            "celery.retries": task.retries,
            "celery.runtime_seconds": task.runtime,
            "celery.queued_seconds": max(queued, 0.0) if queued is not None else None,
            "celery_flow.trace_id": task.trace_id,
        }
    )

    events: list[SpanEvent] = []
    if queued is not None and task.started_at is not None:
        events.append(
            SpanEvent(
                "celery.queued",
                _clean(
                    {
                        "celery.queued_seconds": max(queued, 0.0),
                        "celery.received_seconds": (
                            max(task.started_at - task.received_at, 0.0) if task.received_at else None
                        ),
                        "messaging.destination.name": task.queue,
                    }
                ),
                timestamp=_ns(task.started_at),
            )
        )
    for record in task.events:
        if record.type == "retried":
            events.append(
                SpanEvent(
                    "celery.retry",
                    _clean(
                        {
                            "celery.retries": record.retries,
                            "celery.retry.reason": record.reason or record.exception,
                            "celery.hostname": record.hostname,
                        }
                    ),
                    timestamp=_ns(record.ts),
                )
            )
        elif record.type in {"revoked", "rejected"}:
            events.append(
                SpanEvent(
                    f"celery.{record.type}",
                    _clean({"celery.reason": record.reason}),
                    timestamp=_ns(record.ts),
                )
            )

    status = Status(StatusCode.UNSET)
    if task.state == "FAILURE":
        description = task.exception or "task failed"
        exc_type, exc_message = _split_exception(description)
        status = Status(StatusCode.ERROR, description[:_MAX_ATTRIBUTE])
        events.append(
            SpanEvent(
                "exception",
                _clean(
                    {
                        "exception.type": exc_type,
                        "exception.message": exc_message,
                        "exception.stacktrace": task.traceback,
                    }
                ),
                timestamp=_ns(end),
            )
        )
    elif task.state == "SUCCESS":
        status = Status(StatusCode.OK)

    return ReadableSpan(
        name=task.name or "celery.task",
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=sorted(events, key=lambda event: event.timestamp),
        kind=SpanKind.CONSUMER,
        status=status,
        start_time=_ns(start),
        end_time=_ns(end),
        instrumentation_scope=scope,
    )


class _RateLimitFilter(logging.Filter):
    """Keeps the SDK's own per-attempt export warnings from flooding the log while a collector is down."""

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self._limit = RateLimit(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or self._limit.admit() is not None


def _resource(service_name: str | None) -> Resource:
    """`service.name`: the argument, else OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else "celery"."""
    if service_name:
        return Resource.create({"service.name": service_name})
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = Resource.create({"service.name": "celery"})
    return resource


_SDK_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
)
_sdk_filter = _RateLimitFilter()
# Every exporter problem shares one budget: one line a minute, however many kinds go wrong.
_LOG_KEY = "otlp"


class OtlpExporter:
    """A consumer sink: `exporter(changed_task_ids)` queues ids; a daemon thread exports finished tasks.

    `headers`/`timeout` default to the standard OTEL_EXPORTER_OTLP_(TRACES_)HEADERS/TIMEOUT variables.
    The thread reads each task back from the store (`store.get_task`), skips tasks that have not reached a
    terminal state, builds its span and sends spans in batches. A task is exported once per terminal state
    (remembered in a bounded LRU of `remember` ids, so memory stays flat on a long-running server).
    """

    #: Prefix of this sink's counters in /api/health (consumer metrics) and /metrics.
    metrics_prefix = "otlp"

    def __init__(
        self,
        endpoint: str | None,
        store: Store,
        *,
        service_name: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        queue_size: int = 100_000,
        batch_size: int = 256,
        flush_interval: float = 1.0,
        coalesce: float = 0.5,
        remember: int = 200_000,
        span_exporter: SpanExporter | None = None,
        open_store: Callable[[], Store] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._store = store
        self._open_store = open_store
        self._exporter: SpanExporter = span_exporter or OTLPSpanExporter(
            endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout
        )
        self._resource = _resource(service_name)
        self._scope = InstrumentationScope("celery_flow", __version__)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.coalesce = coalesce
        self.remember = remember

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        # Task ids waiting to be read back, with when they were first queued. A task changes several times
        # in a few milliseconds (sent, received, started, succeeded): each id is kept once and read after
        # `coalesce` seconds, so a short task costs one store read, not four.
        self._queue: OrderedDict[str, float] = OrderedDict()
        self._urgent = 0
        self._busy = False
        self._stopping = False
        self._closed = False
        self._exporter_down = False
        # Keys "task_id:STATE" already exported (or given up on), oldest first; touched by the thread only.
        self._done: OrderedDict[str, None] = OrderedDict()
        self._counts = {
            "received": 0,
            "dropped": 0,
            "exported": 0,
            "failed": 0,
            "export_errors": 0,
            "read_errors": 0,
            "batches": 0,
        }
        self._errors = RateLimitedLog(log)
        for name in _SDK_LOGGERS:
            logger = logging.getLogger(name)
            if _sdk_filter not in logger.filters:
                logger.addFilter(_sdk_filter)
        self._thread = threading.Thread(target=self._run, name="celery-flow-otlp", daemon=True)
        self._thread.start()

    # ---- the sink side (consumer thread): never blocks beyond a short lock ---------------------------

    def __call__(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if not ids:
            return
        with self._cond:
            if self._stopping:
                return
            now = time.monotonic()
            queue = self._queue
            dropped = 0
            for task_id in ids:
                if task_id in queue:
                    continue
                if len(queue) >= self.queue_size:
                    dropped += 1
                    continue
                queue[task_id] = now
            self._counts["received"] += len(ids)
            self._counts["dropped"] += dropped
            self._cond.notify()
        if dropped:
            self._errors.warning(
                _LOG_KEY, "OTLP export queue full (%d ids): dropped %d task ids", self.queue_size, dropped
            )

    def stats(self) -> dict[str, int]:
        """Counters for /api/health and /metrics: spans exported/failed, ids dropped, queue depth."""
        with self._lock:
            return {**self._counts, "queued": len(self._queue)}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued id was handled (exported, skipped or failed); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._urgent += 1
            self._cond.notify_all()
            try:
                while self._queue or self._busy:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(remaining, 0.05))
                return True
            finally:
                self._urgent -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Export what is queued (for at most `timeout` s), then stop the thread and the HTTP exporter.

        With a collector that is down, the HTTP client would keep retrying a batch for its whole timeout:
        shutting the exporter down first makes those retries (and what is left) fail at once, so a
        server stops promptly whatever the collector does. Calling it again does nothing.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
        flushed = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if not flushed:
            self._shutdown_exporter()
        self._thread.join(timeout)
        self._shutdown_exporter()

    def _shutdown_exporter(self) -> None:
        if self._exporter_down:
            return
        self._exporter_down = True
        try:
            self._exporter.shutdown()
        except Exception:
            log.debug("OTLP exporter shutdown failed", exc_info=True)

    # ---- the export thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        store = self._store
        if self._open_store is not None:
            store = self._open_store()
        while True:
            with self._cond:
                while True:
                    if self._stopping and not self._queue:
                        return
                    wait = self._due_in()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                ids: list[str] = []
                ready_before = time.monotonic() - self.coalesce
                take_all = bool(self._urgent or self._stopping or len(self._queue) >= self.batch_size)
                while self._queue and len(ids) < self.batch_size:
                    task_id, queued_at = next(iter(self._queue.items()))
                    if queued_at > ready_before and not take_all:
                        break
                    del self._queue[task_id]
                    ids.append(task_id)
                self._busy = True
            try:
                self._export(store, ids)
            except Exception:  # never let the thread die: count and go on
                log.exception("OTLP export batch failed unexpectedly")
                with self._lock:
                    self._counts["export_errors"] += 1
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _due_in(self) -> float:
        """Seconds until the oldest queued id is due (0: now; called with the lock held)."""
        if not self._queue:
            return self.flush_interval
        if self._urgent or self._stopping or len(self._queue) >= self.batch_size:
            return 0.0
        oldest = next(iter(self._queue.values()))
        return max(oldest + self.coalesce - time.monotonic(), 0.0)

    def _export(self, store: Store, task_ids: Sequence[str]) -> None:
        spans: list[ReadableSpan] = []
        keys: list[str] = []
        for task_id in task_ids:
            try:
                task = store.get_task(task_id)
            except Exception as exc:
                with self._lock:
                    self._counts["read_errors"] += 1
                self._errors.warning(
                    _LOG_KEY, "OTLP export could not read task %s from the store: %s", task_id, exc
                )
                continue
            if task is None or task.state not in TERMINAL_STATES:
                continue
            key = f"{task_id}:{task.state}"
            if key in self._done:
                continue
            spans.append(task_span(task, self._resource, self._scope))
            keys.append(key)
        if not spans:
            return
        try:
            result = self._exporter.export(spans)
        except Exception as exc:
            result = SpanExportResult.FAILURE
            self._errors.warning(_LOG_KEY, "OTLP export to %s raised: %s", self.endpoint, exc)
        else:
            if result is not SpanExportResult.SUCCESS:
                self._errors.warning(
                    _LOG_KEY, "OTLP export of %d spans to %s failed", len(spans), self.endpoint
                )
        with self._lock:
            self._counts["batches"] += 1
            if result is SpanExportResult.SUCCESS:
                self._counts["exported"] += len(spans)
            else:
                self._counts["failed"] += len(spans)
                self._counts["export_errors"] += 1
        # Failed spans are not retried beyond the OTLP client's own retries: a collector that is down
        # must not make the server hold an unbounded backlog.
        for key in keys:
            self._done[key] = None
            if len(self._done) > self.remember:
                self._done.popitem(last=False)
