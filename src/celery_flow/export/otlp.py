"""OpenTelemetry export: a consumer sink that sends every finished task as one span over OTLP/HTTP
(protobuf); the spans themselves come from export.spans.

Why an own queue and thread: the consumer calls this sink right after each store commit; reading the
task back and talking HTTP to a collector must never slow or block ingest. The queue is bounded: when
it is full, ids are dropped and counted (`stats()`); exporter failures are counted and logged at most
once a minute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from celery_flow import __version__
from celery_flow.export.spans import task_span
from celery_flow.flow.model import TERMINAL_STATES
from celery_flow.ratelimit import RateLimit, RateLimitedLog
from celery_flow.store.base import Store

__all__ = ["OtlpExporter"]

log = logging.getLogger("celery_flow.export.otlp")


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
