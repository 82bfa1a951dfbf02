"""`GET /metrics`: the health report and the tasks' own figures as Prometheus metrics, built by
prometheus_client at scrape time.

The task metrics (`TaskCollector`) are read from the store at scrape time (cached CACHE_SECONDS): every
server on one store reports the same totals, whatever consumer folded the events, so adding servers never
double-counts and a scrape of any of them is the whole picture. They count since the store was created
(store/stats.py's all-time counts: retention does not lower them), so they stay counters.

Each server (each `CeleryFlowExtension`) has its own `CollectorRegistry`, never prometheus_client's
global `REGISTRY`: an app that already exports metrics, or mounts celery-flow twice, has no clash.

    registry = metrics_registry(health.report, lambda: (hub.pushed, hub.slow_disconnects))
    body = render(registry)  # served as CONTENT_TYPE
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from celery_flow.server.health import HealthReport
from celery_flow.store.base import StoreError
from celery_flow.store.schedules import Schedules
from celery_flow.store.stats import EDGES, AllTime, Histogram

CONTENT_TYPE = CONTENT_TYPE_LATEST
CONSUMER_PREFIX = "celery_flow_consumer_"
# Seconds a read of the store's task counts serves scrapes.
CACHE_SECONDS = 5.0
OTHER = "other"
# Every task metric family this module exports (the Grafana dashboard's test checks its queries against
# these and the health ones).
TASK_METRICS = (
    "celery_flow_tasks_total",
    "celery_flow_tasks_lost_total",
    "celery_flow_task_runtime_seconds",
    "celery_flow_task_queue_wait_seconds",
    "celery_flow_queue_backlog",
    "celery_flow_workers_online",
    "celery_flow_schedule_late",
    "celery_flow_schedule_missed_total",
    "celery_flow_beat_up",
)


def metric_name(key: str) -> str:
    """A consumer metric's name: `otlp-exported` → `celery_flow_consumer_otlp_exported`."""
    return CONSUMER_PREFIX + "".join(c if c.isascii() and c.isalnum() else "_" for c in key)


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=value)


def _flag(name: str, help_: str, true: bool | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=1.0 if true else 0.0)


def _counter(name: str, help_: str, value: float) -> CounterMetricFamily:
    # prometheus_client names the family without `_total` and adds it back to the sample.
    return CounterMetricFamily(name, help_, value=value)


class HealthCollector:
    """Yields one family per metric from a fresh (or briefly cached) health report on each scrape."""

    def __init__(self, report: Callable[[], HealthReport], live: Callable[[], tuple[int, int]]) -> None:
        self._report = report
        self._live = live

    def describe(self) -> list[Metric]:
        # Nothing up front: registering must not probe the broker, and the families depend on the report.
        return []

    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for family in self._families(self._report()):
            # Each family once: the consumer's own `lag` is the `celery_flow_consumer_lag` above it.
            if family.name not in seen:
                seen.add(family.name)
                yield family

    def _families(self, report: HealthReport) -> Iterator[Metric]:
        yield _flag("celery_flow_up", "1 when health is ok, 0 when degraded", report.status == "ok")
        help_ = "1 when the broker answered the last ping"
        yield _flag("celery_flow_broker_reachable", help_, report.transport.reachable)
        yield _flag(
            "celery_flow_store_reachable", "1 when the store answered the last ping", report.store.reachable
        )
        if report.store.tasks is not None:
            yield _gauge("celery_flow_tasks_stored", "Tasks in the store", report.store.tasks)
        if report.store.events is not None:
            yield _gauge("celery_flow_events_stored", "Events in the store", report.store.events)
        if report.consumer.lag is not None:
            help_ = "Stream entries not yet folded into the store"
            yield _gauge("celery_flow_consumer_lag", help_, report.consumer.lag)
        for key, value in sorted(report.consumer.metrics.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue  # status, detail, broker, the per-kind `rejected` dict, a None
            family = _counter if key.endswith("_total") else _gauge
            yield family(metric_name(key), f"Embedded consumer: {key}", value)
        rejected = CounterMetricFamily(
            "celery_flow_events_rejected_total", "Malformed entries, by kind", labels=["kind"]
        )
        for kind, count in report.rejected.items():
            rejected.add_metric([kind], count)
        yield rejected
        help_ = "Events dropped by publishers whose broker was slow or down"
        yield _counter("celery_flow_publisher_dropped_total", help_, report.publisher_dropped)
        yield _gauge("celery_flow_live_clients", "Connected /api/live clients", report.live_clients)
        pushed, slow_disconnects = self._live()
        yield _counter("celery_flow_live_frames_total", "Frames queued to live clients", pushed)
        help_ = "Live clients disconnected for not keeping up"
        yield _counter("celery_flow_live_slow_disconnects_total", help_, slow_disconnects)


class TaskCollector:
    """The tasks' counts, durations, backlog and workers from the store (`snapshot`), at most
    `max_names` task names labelled: those with the most finished tasks; the rest are name="other"."""

    def __init__(self, snapshot: Callable[[], AllTime], max_names: int) -> None:
        self._snapshot = snapshot
        self.max_names = max_names
        self._cached: tuple[float, AllTime] | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # registering must not read the store

    def read(self) -> AllTime:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_SECONDS:
                self._cached = (now, self._snapshot())
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self.read()
        except StoreError:  # the store is down or not open yet: celery_flow_store_reachable says so
            return
        totals: dict[str, int] = {}
        for (name, _), n in snap.finished.items():
            totals[name] = totals.get(name, 0) + n
        kept = set(sorted(totals, key=lambda n: (-totals[n], n))[: self.max_names])

        def label(name: str) -> str:
            return name if name in kept else OTHER

        tasks = CounterMetricFamily(
            "celery_flow_tasks", "Tasks finished, by task name and final state", labels=["name", "state"]
        )
        lost = CounterMetricFamily(
            "celery_flow_tasks_lost", "Tasks marked LOST, by task name", labels=["name"]
        )
        by_state: dict[tuple[str, str], int] = {}
        by_lost: dict[str, int] = {}
        for (name, state), n in snap.finished.items():
            named = (label(name), state)
            by_state[named] = by_state.get(named, 0) + n
            if state == "LOST":
                by_lost[named[0]] = by_lost.get(named[0], 0) + n
        for (name, state), n in sorted(by_state.items()):
            tasks.add_metric([name, state], n)
        for name, n in sorted(by_lost.items()):
            lost.add_metric([name], n)
        yield tasks
        yield lost
        runtime: dict[tuple[str, ...], Histogram] = {}
        wait: dict[tuple[str, ...], Histogram] = {}
        for (metric, name, queue), hist in snap.durations.items():
            key: tuple[str, ...] = (label(name),) if metric == "runtime" else (label(name), queue)
            merged = (runtime if metric == "runtime" else wait).setdefault(key, Histogram())
            for k in range(len(hist.runs)):
                merged.add(k, hist.runs[k], hist.total[k])
        yield _histogram(
            "celery_flow_task_runtime_seconds", "Task runtimes (started to finished)", ["name"], runtime
        )
        yield _histogram(
            "celery_flow_task_queue_wait_seconds",
            "Seconds from sent (or due, for an ETA) to started",
            ["name", "queue"],
            wait,
        )
        backlog = GaugeMetricFamily(
            "celery_flow_queue_backlog", "Tasks sent to a queue and not received yet", labels=["queue"]
        )
        for b in snap.backlog:
            backlog.add_metric([b.queue], b.waiting)
        yield backlog
        yield _gauge("celery_flow_workers_online", "Workers online now", snap.workers_online)


class ScheduleCollector:
    """Beat schedule entries from the store (`read`, docs/schedules.md), cached like TaskCollector's
    counts: late now (gauge), runs missed since each entry was first seen (counter), and each beat up."""

    def __init__(self, read: Callable[[], Schedules]) -> None:
        self._read = read
        self._cached: tuple[float, Schedules] | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # registering must not read the store

    def read(self) -> Schedules:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_SECONDS:
                self._cached = (now, self._read())
            return self._cached[1]

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self.read()
        except StoreError:  # celery_flow_store_reachable says so
            return
        late = GaugeMetricFamily(
            "celery_flow_schedule_late",
            "1 while a beat schedule entry's next run is overdue by more than the grace period",
            labels=["name"],
        )
        missed = CounterMetricFamily(
            "celery_flow_schedule_missed",
            "Runs of a beat schedule entry that came due and were never sent",
            labels=["name"],
        )
        for item in snap.items:
            late.add_metric([item.name], 1.0 if item.late else 0.0)
            missed.add_metric([item.name], item.missed)
        yield late
        yield missed
        up = GaugeMetricFamily("celery_flow_beat_up", "1 while a beat process is up", labels=["hostname"])
        for beat in snap.beats:
            up.add_metric([beat.hostname], 1.0 if beat.up else 0.0)
        yield up


def _histogram(
    name: str, help_: str, labels: list[str], hists: dict[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_, labels=labels)
    for key, hist in sorted(hists.items()):
        cumulative, buckets = 0, []
        for k, edge in enumerate(EDGES):
            cumulative += hist.runs[k]
            buckets.append((f"{edge:g}", float(cumulative)))
        buckets.append(("+Inf", float(hist.count)))
        family.add_metric(list(key), buckets, sum_value=max(0.0, sum(hist.total)))
    return family


def metrics_registry(
    report: Callable[[], HealthReport],
    live: Callable[[], tuple[int, int]],
    tasks: TaskCollector | None = None,
    schedules: ScheduleCollector | None = None,
) -> CollectorRegistry:
    """A registry of its own holding one `HealthCollector` (and the `TaskCollector`, when given); `live`
    gives (frames pushed, slow disconnects)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(report, live))
    if tasks is not None:
        registry.register(tasks)
    if schedules is not None:
        registry.register(schedules)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The exposition in the text format CONTENT_TYPE names."""
    return generate_latest(registry)
