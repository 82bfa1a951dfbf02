"""`GET /metrics`: the health report as Prometheus metrics, built by prometheus_client at scrape time.

Each server (each `CeleryFlowExtension`) has its own `CollectorRegistry`, never prometheus_client's
global `REGISTRY`: an app that already exports metrics, or mounts celery-flow twice, has no clash.

    registry = metrics_registry(health.report, lambda: (hub.pushed, hub.slow_disconnects))
    body = render(registry)  # served as CONTENT_TYPE
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from celery_flow.server.health import HealthReport

CONTENT_TYPE = CONTENT_TYPE_LATEST
CONSUMER_PREFIX = "celery_flow_consumer_"


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


def metrics_registry(
    report: Callable[[], HealthReport], live: Callable[[], tuple[int, int]]
) -> CollectorRegistry:
    """A registry of its own holding one `HealthCollector`; `live` gives (frames pushed, slow disconnects)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(report, live))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The exposition in the text format CONTENT_TYPE names."""
    return generate_latest(registry)
