"""The consumer: transport -> decode -> store, acknowledging only what the store has committed.

One loop, built so that no input and no outage can stop it:

- Entries are read in batches from the transport's shared consumer group (Redis Streams or RabbitMQ;
  the subscription itself re-reads its own pending entries after a restart and claims those of dead
  members), decoded with `events.decode`, folded with one `store.apply()` transaction per batch, and
  only then acknowledged. A crash (even `kill -9`) between apply and ack re-delivers the batch, and
  `apply()` is idempotent per event id, so nothing is lost and nothing counts twice.
- Malformed entries (not JSON, not UTF-8, missing or mistyped fields, oversize) are counted per kind,
  logged once per kind, acknowledged and skipped: bad input never blocks the stream behind it. The
  events of a batch entry (transport/base.py framing) arrive as separate messages sharing the entry's
  id and are judged one by one. `lag` and `acked_total` count broker entries, not events.
- A broker that goes away: reconnect with capped exponential backoff, status `reconnecting`.
- A store that fails: keep the batch unacknowledged and retry it with backoff, status `store_error`;
  one event the store can never hold is isolated and counted (`rejected.unstorable`), not retried forever.
- Retention runs here (`store.sweep`) so one process owns deletes, and the check for tasks lost with
  their silent worker (`store.check_lost`, every few seconds once caught up), and the search index
  (`store.index_search`, every INDEX_INTERVAL seconds, and again at once while behind: the fold
  itself never waits for it); `sinks` (the OTLP exporter)
  get the changed task ids after each commit; a failing sink is logged, never allowed to stop ingest.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from celery_flow.errors import ConfigError
from celery_flow.events import Event, EventRejected, decode
from celery_flow.settings import DEFAULT_GROUP, DEFAULT_PREFIX
from celery_flow.store.base import Store
from celery_flow.store.search import INDEX_INTERVAL, INDEX_SETTLE
from celery_flow.transport import from_url, redact_url
from celery_flow.transport.base import Message, Subscription, Transport, TransportError

__all__ = [
    "DEFAULT_GROUP",
    "DROPPED_COUNTER",
    "REJECTED_PREFIX",
    "Consumer",
    "Sink",
    "default_consumer_name",
    "rejected_by_kind",
    "tune_gc",
]

log = logging.getLogger("celery_flow.consumer")

# Events folded per transaction at most: a task's row is written once per batch it has events in, so under a
# backlog a larger batch writes each task fewer times (2,000 vs 500: ~1.4x the events/s, bench/RESULTS.md).
DEFAULT_BATCH = 2000
# Counters the consumer persists with each commit: events dropped by publishers, and rejected events by kind.
DROPPED_COUNTER = "publisher.dropped"
REJECTED_PREFIX = "rejected."
# Failed attempts at one batch, with the store answering pings, before looking for a poison event in it.
POISON_AFTER = 3
# Seconds before a failed check for lost tasks, or a failed run of the search indexer, is tried again.
LOST_RETRY = 5.0
# How often a running consumer logs one line of progress (only when something happened).
REPORT_INTERVAL = 60.0

#: Called after each commit with the ids of the tasks that changed (e.g. the OTLP exporter). Whoever
#: made the sink closes it (server.runtime closes those with a `close()` after the consumer stops).
Sink = Callable[[list[str]], object]


def rejected_by_kind(counters: Mapping[str, int]) -> dict[str, int]:
    """Rejected counts by kind: `{"rejected.not_json": 2, "publisher.dropped": 5}` → `{"not_json": 2}`."""
    return {k[len(REJECTED_PREFIX) :]: int(v) for k, v in counters.items() if k.startswith(REJECTED_PREFIX)}


# The garbage collector's thresholds in a process that folds (`tune_gc`): a full collection walks every
# event the fold's caches hold, and at Python's defaults (700, 10, 10) collections took ~20% of the
# fold's CPU (bench/RESULTS.md, issue 22); the fold makes few reference cycles, so rarer runs free the same.
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Make garbage collection rarer in a process whose job is folding (`consume`, `server`): our own
    processes only, never a user's app that embeds the extension."""
    gc.set_threshold(*GC_THRESHOLDS)


def default_consumer_name() -> str:
    """`{hostname}:{pid}`: unique per process, so every `consume` is its own group member."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Backoff:
    """Capped exponential backoff: 0.2 s, 0.4 s, ... up to `cap`, reset after a success."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first


class Consumer:
    """Folds one transport's events into one store. Run it with `run(stop_event)` (blocks)."""

    def __init__(
        self,
        broker_url: str,
        store: Store,
        prefix: str = DEFAULT_PREFIX,
        group: str = DEFAULT_GROUP,
        name: str | None = None,
        batch: int = DEFAULT_BATCH,
        read_timeout: float = 1.0,
        ttl: float | None = None,
        max_tasks: int | None = None,
        sweep_interval: float = 60.0,
        sinks: Iterable[Sink] = (),
        transport_options: Mapping[str, Any] | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        if batch <= 0:
            raise ConfigError(f"batch must be positive, got {batch}")
        self.broker_url = broker_url
        self.safe_url = redact_url(broker_url)
        self.store = store
        self.prefix = prefix
        self.group = group
        self.name = name or default_consumer_name()
        self.batch = batch
        self.read_timeout = read_timeout
        self.ttl = ttl
        self.max_tasks = max_tasks
        self.sweep_interval = sweep_interval
        self.sinks = list(sinks)
        self.transport_options = dict(transport_options or {})
        self.max_backoff = max_backoff

        self._lock = threading.Lock()
        self._status = "starting"
        self._detail: str | None = None
        self._events_total = 0
        self._batches_total = 0
        self._acked_total = 0
        self._rejected: Counter[str] = Counter()
        self._dropped_total = 0
        self._swept_total = 0
        self._reconnects = 0
        self._store_errors = 0
        self._sink_errors = 0
        self._lag: int | None = None
        self._last_commit: float | None = None
        self._logged_kinds: set[str] = set()

        self._transport: Transport | None = None
        self._subscription: Subscription | None = None
        self._next_sweep = 0.0
        self._next_lag = 0.0
        self._next_lost = 0.0
        self._next_index = 0.0
        self._caught_up = False
        self._next_report = time.monotonic() + REPORT_INTERVAL
        self._reported_events = 0
        # The largest entry of the last read, in events (batch framing: transport/base.py).
        self._events_per_entry = 1

    # ---- reporting -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot for /api/health and /metrics: status, throughput, rejects, lag."""
        with self._lock:
            return {
                "status": self._status,
                "detail": self._detail,
                "broker": self.safe_url,
                "group": self.group,
                "name": self.name,
                "events_total": self._events_total,
                "batches_total": self._batches_total,
                "acked_total": self._acked_total,
                "rejected": dict(self._rejected),
                "rejected_total": sum(self._rejected.values()),
                "publisher_dropped_total": self._dropped_total,
                "swept_total": self._swept_total,
                "reconnects_total": self._reconnects,
                "store_errors_total": self._store_errors,
                "sink_errors_total": self._sink_errors,
                "lag": self._lag,
                "last_commit_at": self._last_commit,
            }

    def _set_status(self, status: str, detail: str | None = None) -> None:
        with self._lock:
            changed = (status, detail) != (self._status, self._detail)
            self._status, self._detail = status, detail
        if changed and status in {"reconnecting", "store_error"}:
            log.warning("consumer %s: %s", status, detail)
        elif changed and status == "running" and detail is None:
            log.info("consumer running: %s group=%s name=%s", self.safe_url, self.group, self.name)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; finishes (commits and acks) the batch in hand before returning."""
        backoff = _Backoff(cap=self.max_backoff)
        try:
            while not stop.is_set():
                sub = self._connect()
                if sub is None:
                    self._set_status("reconnecting", self._detail)
                    stop.wait(backoff.next())
                    continue
                try:
                    # `batch` counts events, `read()` entries: ask for fewer entries while they are
                    # batches (transport/base.py framing), keeping one store transaction bounded.
                    messages = sub.read(max(1, self.batch // self._events_per_entry), self.read_timeout)
                except Exception as exc:  # TransportError, or a client error the transport did not wrap
                    if not isinstance(exc, TransportError):
                        log.warning("unexpected error reading from the broker", exc_info=True)
                    self._disconnect(f"broker unreachable: {exc}")
                    stop.wait(backoff.next())
                    continue
                backoff.reset()
                if self._status != "running":
                    self._set_status("running")
                # A full read means a backlog: silence is judged only once caught up (lost.py).
                self._caught_up = len(messages) < max(1, self.batch // self._events_per_entry)
                for chunk in self._chunks(messages):
                    self.process(chunk, stop)
                self._housekeeping(stop)
        finally:
            self._disconnect(None)
            self._set_status("stopped")
            st = self.stats()
            log.info(
                "consumer stopped: %d events folded in %d batches, %d rejected, %d reconnects",
                st["events_total"], st["batches_total"], st["rejected_total"], st["reconnects_total"],
            )  # fmt: skip

    def _connect(self) -> Subscription | None:
        if self._subscription is not None:
            return self._subscription
        try:
            if self._transport is None:
                self._transport = from_url(self.broker_url, prefix=self.prefix, **self.transport_options)
            self._subscription = self._transport.subscribe(self.group, self.name)
        except ConfigError:
            raise  # a bad URL or option never fixes itself: the CLI reports it at startup
        except Exception as exc:  # TransportError, or a client error the transport did not wrap
            with self._lock:
                self._reconnects += 1
                self._detail = f"broker unreachable: {exc}"
            self._close_transport()
            return None
        return self._subscription

    def _disconnect(self, reason: str | None) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            try:
                sub.close()
            except Exception:  # closing a dead connection may fail too; it is being dropped anyway
                log.debug("closing subscription failed", exc_info=True)
        self._close_transport()
        if reason is not None:
            with self._lock:
                self._reconnects += 1
            self._set_status("reconnecting", reason)

    def _close_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                transport.close()
            except Exception:
                log.debug("closing transport failed", exc_info=True)

    # ---- one batch -----------------------------------------------------------------------------

    def _chunks(self, messages: list[Message]) -> list[list[Message]]:
        """Cut a read into transactions of about `batch` events, never splitting an entry's events.

        A read of batch entries may hold far more events than `batch` (the first read after a restart
        cannot know the entries' size): committing and acknowledging it piecewise keeps transactions
        small and lets progress survive a kill halfway through.
        """
        size, n = self.batch, len(messages)
        if n <= size:
            return [messages] if messages else []
        out: list[list[Message]] = []
        i = 0
        while i < n:
            j = min(i + size, n)
            while j < n and messages[j].id == messages[j - 1].id:
                j += 1
            out.append(messages[i:j])
            i = j
        return out

    def decode_batch(self, messages: Sequence[Message]) -> tuple[list[Event], Counter[str]]:
        """Valid events, plus counters (`rejected.<kind>`, `publisher.dropped`) for everything else."""
        events: list[Event] = []
        counters: Counter[str] = Counter()
        for message in messages:
            try:
                event = decode(message.data)
            except EventRejected as exc:
                self._reject(exc.kind, exc.detail, message.id)
                counters[REJECTED_PREFIX + exc.kind] += 1
                continue
            except Exception as exc:  # decode must never take the consumer down, whatever the bytes
                self._reject("undecodable", f"{type(exc).__name__}: {exc}", message.id)
                counters[REJECTED_PREFIX + "undecodable"] += 1
                continue
            if event.type == "publisher.dropped":
                if isinstance(event.dropped, int) and event.dropped > 0:
                    counters[DROPPED_COUNTER] += event.dropped
                continue
            events.append(event)
        return events, counters

    def _reject(self, kind: str, detail: str, message_id: str) -> None:
        if kind in self._logged_kinds:
            return
        self._logged_kinds.add(kind)
        log.warning(
            "rejected malformed event (%s) at %s: %s; further %r rejects are only counted (see /api/health)",
            kind,
            message_id,
            detail[:300],
            kind,
        )

    def process(self, messages: Sequence[Message], stop: threading.Event | None = None) -> list[str]:
        """Decode, commit and acknowledge one batch; returns the changed task ids.

        The store call is retried with backoff until it succeeds or `stop` is set; in the latter case
        nothing is acknowledged and the entries stay pending for the next run (or another member).
        """
        events, counters = self.decode_batch(messages)
        changed = self._commit(events, counters, stop)
        if changed is None:
            return []
        with self._lock:
            self._events_total += len(events)
            self._batches_total += 1
            self._rejected.update(rejected_by_kind(counters))
            self._dropped_total += counters.get(DROPPED_COUNTER, 0)
            self._last_commit = time.time()
        # A batch entry's events share its id, acknowledged once (and never before all were committed:
        # a subscription returns every event of an entry in the same read).
        per_entry = Counter(m.id for m in messages)
        self._events_per_entry = max(per_entry.values(), default=1)
        self._ack(list(per_entry))
        if changed:
            self._notify(changed)
        return changed

    def _commit(
        self, events: list[Event], counters: Counter[str], stop: threading.Event | None
    ) -> list[str] | None:
        """One transaction for the batch, retried with backoff while the store is failing.

        When the store keeps refusing the batch although it answers a ping, one event in it may be poison
        (something the store cannot hold): the batch is then committed event by event, and an event the
        store refuses repeatedly while it still commits a probe write is counted as
        `rejected.unstorable`, so one bad event never stalls the stream. A store that cannot write at
        all (disk full, read-only) rejects nothing: the consumer waits for it.
        """
        if not events and not counters:
            return []
        backoff = _Backoff(cap=self.max_backoff)
        failures = 0
        while True:
            try:
                changed = self.store.apply(events, dict(counters) or None)
            except Exception as exc:  # StoreError, a driver error, a full disk: never lose the batch
                failures += 1
                self._store_failed(exc)
                if stop is None:
                    raise
                if failures >= POISON_AFTER and events and self._store_answers():
                    return self._isolate(events, counters, stop)
                stop.wait(backoff.next())
                if stop.is_set():
                    return None
                continue
            if self._status == "store_error":
                self._set_status("running")
            return list(changed)

    def _store_failed(self, exc: Exception) -> None:
        with self._lock:
            self._store_errors += 1
        self._set_status("store_error", f"store write failed: {type(exc).__name__}: {exc}")

    def _store_answers(self) -> bool:
        try:
            self.store.ping()
        except Exception:
            return False
        return True

    def _store_writes(self) -> bool:
        """Whether the store can commit at all right now (a disk that is full answers pings too)."""
        try:
            self.store.apply([], {"consumer.write_probes": 1})
        except Exception:
            return False
        return True

    def _isolate(
        self, events: list[Event], counters: Counter[str], stop: threading.Event
    ) -> list[str] | None:
        changed: list[str] = []
        refused: Counter[str] = Counter(counters)
        for event in events:
            backoff = _Backoff(cap=self.max_backoff)
            refusals = 0
            while True:
                try:
                    changed += self.store.apply([event], None)
                    break
                except Exception as exc:
                    self._store_failed(exc)
                    refusals += self._store_writes()
                    if refusals >= POISON_AFTER:  # refused again and again by a store that can write
                        self._reject("unstorable", f"{type(exc).__name__}: {exc}", event.id)
                        refused[REJECTED_PREFIX + "unstorable"] += 1
                        break
                    stop.wait(backoff.next())  # transient, or an outage after all: retry this event
                    if stop.is_set():
                        return None
        if self._commit([], refused, stop) is None:
            return None
        counters.clear()
        counters.update(refused)
        return changed

    def _ack(self, ids: list[str]) -> None:
        sub = self._subscription
        if sub is None or not ids:
            return
        try:
            sub.ack(ids)
        except Exception as exc:
            # Committed but not acknowledged: the entries come back after reconnecting and are
            # applied again, which changes nothing (idempotent per event id).
            self._disconnect(f"broker unreachable while acknowledging: {exc}")
            return
        with self._lock:
            self._acked_total += len(ids)

    def _notify(self, changed: list[str]) -> None:
        for sink in self.sinks:
            try:
                sink(changed)
            except Exception:
                with self._lock:
                    self._sink_errors += 1
                log.exception("sink %r failed; ingest continues", sink)

    # ---- periodic work -------------------------------------------------------------------------

    def _housekeeping(self, stop: threading.Event) -> None:
        now = time.monotonic()
        if now >= self._next_lag and self._subscription is not None:
            self._next_lag = now + 2.0
            try:
                lag = self._subscription.lag()
            except Exception:  # lag is informative only
                lag = None
            with self._lock:
                self._lag = lag
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL
            st = self.stats()
            if st["events_total"] != self._reported_events:
                log.info(
                    "consumer: %d events folded in the last %.0fs (%d in all), lag %s, %d rejected",
                    st["events_total"] - self._reported_events, REPORT_INTERVAL, st["events_total"],
                    st["lag"], st["rejected_total"],
                )  # fmt: skip
                self._reported_events = st["events_total"]
        if (self.ttl is not None or self.max_tasks is not None) and now >= self._next_sweep:
            self._next_sweep = now + self.sweep_interval
            self.sweep()
        if self._caught_up and now >= self._next_lost:
            self._next_lost = now + self.check_lost()
        if now >= self._next_index:
            self._next_index = now + self.index_search()

    def index_search(self) -> float:
        """Bring the search index up to the tasks stored (store/search.py); return seconds until the next
        run: none while it is behind. Errors are logged and retried at the next run."""
        try:
            run = self.store.index_search(settle=INDEX_SETTLE)
        except Exception as exc:
            log.warning("search indexing failed (will retry): %s", exc)
            return LOST_RETRY
        return 0.0 if run.lag else INDEX_INTERVAL

    def check_lost(self) -> float:
        """Mark LOST the tasks of workers gone silent (store/lost.py); return seconds until the next check.
        Errors are logged and retried at the next check."""
        try:
            changed, next_in = self.store.check_lost()
        except Exception as exc:
            log.warning("check for lost tasks failed (will retry): %s", exc)
            return LOST_RETRY
        if changed:
            log.info("marked %d tasks LOST: their worker went silent", len(changed))
            self._notify(changed)
        return next_in

    def sweep(self) -> int:
        """Apply retention now; errors are logged and retried at the next interval."""
        try:
            removed = self.store.sweep(self.ttl, self.max_tasks)
        except Exception as exc:
            log.warning("retention sweep failed (will retry): %s", exc)
            return 0
        with self._lock:
            self._swept_total += removed
        if removed:
            log.info("retention: removed %d tasks", removed)
        return removed
