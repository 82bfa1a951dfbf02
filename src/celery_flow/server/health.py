"""Health: is the broker reachable, does the store answer, is the consumer keeping up, what was rejected.

One `HealthMonitor` computes the report for `GET /api/health`, `/metrics` and the live status frames, so
they never disagree. Probes block (network, disk), so `report()` is called from a worker thread, and the
result is cached for a moment: a dashboard polling health must not turn into a ping storm on the broker.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from celery_flow import __version__
from celery_flow.consumer import DROPPED_COUNTER, rejected_by_kind
from celery_flow.settings import DEFAULT_GROUP
from celery_flow.store.backfill import RefoldProgress
from celery_flow.store.backfill import status as migration_status
from celery_flow.store.base import Store
from celery_flow.transport import from_url, redact_url
from celery_flow.transport.base import Subscription, Transport

HealthStatus = Literal["ok", "degraded"]


@dataclass
class TransportHealth:
    url: str | None
    reachable: bool | None
    detail: str | None = None


@dataclass
class StoreHealth:
    url: str | None
    reachable: bool
    detail: str | None = None
    tasks: int | None = None
    events: int | None = None
    # The store's schema version, and the re-fold of every task a migration started, while it runs.
    schema: int | None = None
    refold: RefoldProgress | None = None
    # Change numbers (seq) stored but not yet in the search index: tasks wait a second or two to be
    # findable (store/search.py's indexer, run by the consumers).
    search_lag: int | None = None


@dataclass
class ConsumerHealth:
    """`mode` is `embedded` (this process folds events), or `external` (a `celery-flow consume` does)."""

    mode: Literal["embedded", "external"]
    status: str
    lag: int | None = None
    detail: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class HealthReport:
    status: HealthStatus
    version: str
    transport: TransportHealth
    store: StoreHealth
    consumer: ConsumerHealth
    rejected: dict[str, int]
    rejected_total: int
    publisher_dropped: int
    live_clients: int
    checked_at: float

    @property
    def detail(self) -> str | None:
        """One line saying what is wrong, for live status frames; None when all is well."""
        problems = []
        if self.transport.reachable is False:
            problems.append(f"broker unreachable: {self.transport.detail}")
        if not self.store.reachable:
            problems.append(f"store unreachable: {self.store.detail}")
        if self.consumer.status not in CONSUMER_OK:
            detail = f": {self.consumer.detail}" if self.consumer.detail else ""
            problems.append(f"consumer {self.consumer.status}{detail}")
        return "; ".join(problems) or None


CONSUMER_OK = frozenset({"starting", "running", "ok", "idle", "external"})


def split_counters(counters: Mapping[str, int]) -> tuple[dict[str, int], int]:
    """Rejected-by-kind and publisher-dropped totals from the store's persisted consumer counters."""
    return rejected_by_kind(counters), int(counters.get(DROPPED_COUNTER, 0))


class HealthMonitor:
    """Probes the broker, the store and the consumer; caches the report for `max_age` seconds."""

    def __init__(
        self,
        store: Callable[[], Store],
        store_url: str | None,
        broker_url: str | None,
        prefix: str,
        consumer_status: Callable[[], ConsumerHealth],
        live_clients: Callable[[], int],
        max_age: float = 2.0,
        group: str = DEFAULT_GROUP,
    ) -> None:
        self._group = group
        self._lag_sub: Subscription | None = None
        # External mode: seconds a backlog may go without shrinking before health says `stalled`.
        self.stall_after = 60.0
        self._last_lag: int | None = None
        self._stalled_since: float | None = None
        self._store = store
        self._store_url = redact_url(store_url) if store_url else None
        self._broker_url = broker_url
        self._prefix = prefix
        self._consumer_status = consumer_status
        self._live_clients = live_clients
        self._max_age = max_age
        self._lock = threading.Lock()
        self._cached: HealthReport | None = None
        self._transport: Transport | None = None

    def report(self, fresh: bool = False) -> HealthReport:
        with self._lock:
            cached = self._cached
            if not fresh and cached is not None and time.time() - cached.checked_at < self._max_age:
                return cached
            report = self._probe()
            self._cached = report
            return report

    def close(self) -> None:
        with self._lock:
            if self._lag_sub is not None:
                with contextlib.suppress(Exception):
                    self._lag_sub.close()
                self._lag_sub = None
            if self._transport is not None:
                self._transport.close()
                self._transport = None

    def _probe_transport(self) -> TransportHealth:
        if not self._broker_url:
            return TransportHealth(url=None, reachable=None, detail="no broker configured")
        safe = redact_url(self._broker_url)
        try:
            if self._transport is None:
                self._transport = from_url(self._broker_url, prefix=self._prefix)
                safe = self._transport.safe_url
            self._transport.ping()
        except Exception as exc:  # health must answer whatever the broker client raises
            return TransportHealth(url=safe, reachable=False, detail=str(exc) or type(exc).__name__)
        return TransportHealth(url=safe, reachable=True)

    def _check_stalled(self, consumer: ConsumerHealth) -> None:
        """An external consumer is invisible to this process; a backlog that never shrinks is not."""
        lag, now = consumer.lag, time.monotonic()
        if lag is None or lag == 0 or (self._last_lag is not None and lag < self._last_lag):
            self._stalled_since = None
        elif self._stalled_since is None:
            self._stalled_since = now
        self._last_lag = lag
        if self._stalled_since is not None and now - self._stalled_since >= self.stall_after:
            consumer.status = "stalled"
            consumer.detail = (
                f"{lag} events waiting and none folded for {now - self._stalled_since:.0f}s: "
                "is `celery-flow consume` running (same --broker-url and --prefix)?"
            )

    def _probe_lag(self) -> int | None:
        """The shared group's backlog, read without joining it as a reader (no entries are taken)."""
        if self._transport is None:
            return None
        try:
            if self._lag_sub is None:
                self._lag_sub = self._transport.subscribe(self._group, "celery-flow-health")
            return self._lag_sub.lag()
        except Exception:  # lag is a nicety: an error here must not fail the health report
            return None

    def _probe(self) -> HealthReport:
        transport = self._probe_transport()
        rejected: dict[str, int] = {}
        dropped = 0
        try:
            store = self._store()
            store.ping()
            stats = store.stats()
            rejected, dropped = split_counters(stats.counters)
            store_health = StoreHealth(
                url=self._store_url,
                reachable=True,
                tasks=stats.tasks,
                events=stats.events,
                search_lag=stats.search_lag,
            )
            migration = migration_status(store)
            if migration is not None:
                store_health.schema, store_health.refold = migration
        except Exception as exc:  # StoreError, or a driver error the store did not wrap
            store_health = StoreHealth(url=self._store_url, reachable=False, detail=str(exc))
        consumer = self._consumer_status()
        if consumer.lag is None and consumer.mode == "external" and transport.reachable:
            consumer.lag = self._probe_lag()
            self._check_stalled(consumer)
        # Counters the embedded consumer holds but has not persisted yet still count.
        for kind, count in consumer.metrics.get("rejected", {}).items():
            rejected[kind] = max(rejected.get(kind, 0), int(count))
        ok = transport.reachable is not False and store_health.reachable and consumer.status in CONSUMER_OK
        return HealthReport(
            status="ok" if ok else "degraded",
            version=__version__,
            transport=transport,
            store=store_health,
            consumer=consumer,
            rejected=dict(sorted(rejected.items())),
            rejected_total=sum(rejected.values()),
            publisher_dropped=dropped,
            live_clients=self._live_clients(),
            checked_at=time.time(),
        )
