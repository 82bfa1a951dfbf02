"""Fire-and-forget event publishing: a bounded buffer and one daemon thread per process.

Signal handlers only `record()` an event's fields into a `collections.deque(maxlen=...)` (O(1), drops
the oldest when full) and, if the thread sleeps, wake it. The thread encodes batches
(events.encode_records: a task's events share one fields dict, encoded once) and hands them to
`transport.publish()`: in a busy worker the handlers run cache-cold between Celery's own code, where
encoding an event costs several times what it costs in the thread's tight loop, and the thread does it
while the worker waits on its broker. The transport has ~1 s socket timeouts, so a down, refusing or
frozen broker stalls only this thread while tasks run on. Drops are counted, logged (rate limited) and
reported as a `publisher.dropped` event once the broker answers again.

After `fork()` (prefork pool children) the buffer, lock and thread of the parent are useless: the child
gets a fresh buffer and transport and starts its own thread lazily on the first event.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from celery_flow.events import (
    Event,
    EventType,
    Record,
    encode,
    encode_records,
    make_event,
    process_identity,
)
from celery_flow.ratelimit import RateLimitedLog
from celery_flow.transport import DeliveryUnknown, Transport, from_url
from celery_flow.transport.urls import redact_url

__all__ = ["Publisher"]

logger = logging.getLogger("celery_flow.tracking")

BATCH_SIZE = 1000
# Flush every 100 ms or at BATCH_SIZE waiting events: one round trip carries many events, and put() never
# wakes the thread. 100 ms rather than 200 halves what a change waits before the live view shows it, for
# about 1 µs more of this thread's CPU per event (bench/RESULTS.md, issue 22's section).
FLUSH_INTERVAL = 0.1
BACKOFF_MIN = 0.25
BACKOFF_MAX = 5.0


# A buffered event: a built Event, or a Record (type, ts, fields, extra fields) the thread encodes. The
# fields dicts belong to the event once recorded (a task's `started` and `succeeded` share one).
Item: TypeAlias = "Event | Record"
# What became of a publish: stored, not stored, or written with no answer (it may have been stored).
Outcome: TypeAlias = Literal["sent", "failed", "unknown"]

_publishers: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for publisher in list(_publishers):
        publisher._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@atexit.register
def _flush_at_exit() -> None:
    for publisher in list(_publishers):
        publisher.stop(timeout=1.0)


class Publisher:
    """One per `init()`; safe to call `put()` from any thread, never blocks, never raises."""

    def __init__(
        self,
        transport_url: str,
        prefix: str,
        ttl: int | None = None,
        buffer_size: int = 10_000,
        transport_factory: Callable[[], Transport] | None = None,
    ) -> None:
        self.transport_url = transport_url
        self.prefix = prefix
        self.ttl = ttl
        self.buffer_size = buffer_size
        self._factory = transport_factory or self._default_factory
        self.log = RateLimitedLog(logger)
        self._buffer: collections.deque[Item] = collections.deque(maxlen=buffer_size)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._transport: Transport | None = None
        self._stopping = False
        self._closed = False
        self._pid = os.getpid()
        # Drops not yet reported in a publisher.dropped event, and totals for tests/metrics.
        self.dropped_unreported = 0
        self.dropped_total = 0
        # Drops whose report was sent but never confirmed: the server may or may not have counted them.
        self.dropped_unconfirmed = 0
        self.published_total = 0
        # Reported on publisher.dropped: a worker's nodename once known, else the host name.
        self.hostname: str | None = None
        self.failures = 0
        _publishers.add(self)

    def _default_factory(self) -> Transport:
        return from_url(self.transport_url, prefix=self.prefix, ttl=self.ttl)

    # -- producer side (hot path) -------------------------------------------------------------------
    def record(
        self, type_: EventType, ts: float, fields: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> None:
        """Queue an event of `type_` at `ts` with `fields` (and `extra`, kept apart so that the events
        of one task can share its identity fields): the hot path, which builds nothing."""
        self._add((type_, ts, fields, extra))

    def put(self, event: Event) -> None:
        """Queue an already built event (tests, benchmarks, tools replaying events)."""
        self._add(event)

    def _add(self, item: Item) -> None:
        # The lock makes the drop count exact when several threads add at once; uncontended it costs little.
        with self._buffer_lock:
            buffer = self._buffer
            if len(buffer) >= self.buffer_size:
                self.dropped_unreported += 1
                self.dropped_total += 1
            buffer.append(item)
        if self._thread is None:
            self._start()
        elif len(buffer) >= BATCH_SIZE and not self._wake.is_set():
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._stopping = False
            thread = threading.Thread(target=self._run, name="celery-flow-publisher", daemon=True)
            self._thread = thread
            thread.start()

    # -- lifecycle ----------------------------------------------------------------------------------
    def flush(self, timeout: float = 2.0) -> bool:
        """Wait up to `timeout` seconds until everything buffered so far was handed to the broker."""
        deadline = time.monotonic() + timeout
        if self._thread is None and self._buffer:
            self._start()
        while self._buffer or self._inflight:
            if time.monotonic() >= deadline or self._thread is None or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Flush for at most `timeout` seconds, then stop the thread and close the transport."""
        if self._closed:
            return
        if self._pid == os.getpid():
            self.flush(timeout)
        self._closed = True
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(0.1, timeout / 2))
        self._thread = None
        transport = self._transport
        self._transport = None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()

    def _reset_after_fork(self) -> None:
        self._buffer = collections.deque(maxlen=self.buffer_size)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._thread = None
        self._transport = None  # the parent's sockets are not ours
        self._inflight = False
        self._pid = os.getpid()
        self.dropped_unreported = 0

    # -- background thread --------------------------------------------------------------------------
    _inflight = False

    def _run(self) -> None:
        pending: list[bytes] = []
        backoff = BACKOFF_MIN
        dropped_mark = 0
        maybe_sent = False  # `pending` was written once and may have been stored
        while True:
            if not pending:
                if len(self._buffer) < BATCH_SIZE:
                    self._wake.wait(FLUSH_INTERVAL)
                    self._wake.clear()
                if self._stopping and not self._buffer:
                    return
                if not self._buffer:
                    continue
                self._inflight = True
                pending = self._take(BATCH_SIZE)
                dropped_mark = self.dropped_total
                maybe_sent = False
            outcome = self._try_publish(pending)
            if outcome == "sent":
                self.published_total += len(pending)
                pending = []
                if self.dropped_unreported:
                    self._report_drops()
                backoff = BACKOFF_MIN
                self._inflight = bool(self._buffer)
                continue
            # Broker unavailable: keep this batch (the oldest events) and retry after a pause, unless the
            # buffer overflowed meanwhile: then this batch is the oldest and is dropped first. Not if it
            # may have been stored, though: counted as dropped, its events could arrive anyway. It is sent
            # again until the broker answers instead (the store keeps an event delivered twice once).
            self.failures += 1
            maybe_sent = maybe_sent or outcome == "unknown"
            if self.dropped_total > dropped_mark and not maybe_sent:
                with self._buffer_lock:
                    self.dropped_unreported += len(pending)
                    self.dropped_total += len(pending)
                pending = []
                self._inflight = bool(self._buffer)
            dropped_mark = self.dropped_total
            if self._stopping:
                self._inflight = False
                return
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = min(BACKOFF_MAX, backoff * 2)
            if self._stopping and self._closed:
                self._inflight = False
                return

    def _take(self, limit: int) -> list[bytes]:
        with self._buffer_lock:
            buffer = self._buffer
            items = [buffer.popleft() for _ in range(min(limit, len(buffer)))]
        return encode_records(items, self._encode_failed)

    def _encode_failed(self, kind: str, exc: Exception) -> None:
        # A bug or an unencodable value: this event is lost, not its batch.
        self.log.warning("encode", "celery-flow: could not encode a %s event: %s", kind, exc)

    def _report_drops(self) -> None:
        with self._buffer_lock:
            count = self.dropped_unreported
            self.dropped_unreported = 0
        hostname, pid = process_identity()
        report = make_event("publisher.dropped", dropped=count, hostname=self.hostname or hostname, pid=pid)
        outcome = self._try_publish([encode(report)])
        if outcome == "failed":
            with self._buffer_lock:
                self.dropped_unreported += count
            return
        if outcome == "unknown":
            # Written, answer lost: sending it again could count these drops twice (the server adds
            # reports up), so the uncertainty is kept here and said in the log instead.
            self.dropped_unconfirmed += count
            self.log.warning(
                "dropped-unconfirmed",
                "celery-flow: dropped %d events; their report to %s got no answer and may be missing "
                "from the server's count",
                count,
                self._safe_url(),
            )
            return
        self.log.warning(
            "dropped",
            "celery-flow: dropped %d events while the broker %s was slow or down (buffer of %d full)",
            count,
            self._safe_url(),
            self.buffer_size,
        )

    def _safe_url(self) -> str:
        return redact_url(self.transport_url)

    def _try_publish(self, payloads: list[bytes]) -> Outcome:
        if not payloads:
            return "sent"
        try:
            if self._transport is None:
                self._transport = self._factory()
            self._transport.publish(payloads)
            return "sent"
        except Exception as exc:
            self.log.warning("publish", "celery-flow: cannot publish events to %s: %s", self._safe_url(), exc)
            return "unknown" if isinstance(exc, DeliveryUnknown) else "failed"
