"""`GET /metrics` in the Prometheus text exposition format (0.0.4), from the same probes as health.

Hand-written rather than via prometheus_client: a dozen gauges do not justify a dependency, and the
values already live in the health report and the consumer's counters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from celery_flow.server.health import HealthReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items())) + "}"


def _family(
    name: str, kind: str, help_: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> list[str]:
    lines = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{_labels(labels)} {value:g}" for labels, value in samples)
    return lines


def _one(name: str, kind: str, help_: str, value: float) -> list[str]:
    return _family(name, kind, help_, [({}, value)])


def render(report: HealthReport, live_pushed: int, live_slow_disconnects: int) -> str:
    """The exposition text; consumer metrics that are not numbers are skipped."""
    up = 1.0 if report.status == "ok" else 0.0
    lines = _one("celery_flow_up", "gauge", "1 when health is ok, 0 when degraded", up)
    broker = 1.0 if report.transport.reachable else 0.0
    lines += _one("celery_flow_broker_reachable", "gauge", "1 when the broker answered the last ping", broker)
    store = 1.0 if report.store.reachable else 0.0
    lines += _one("celery_flow_store_reachable", "gauge", "1 when the store answered the last ping", store)
    if report.store.tasks is not None:
        lines += _one("celery_flow_tasks_stored", "gauge", "Tasks in the store", report.store.tasks)
    if report.store.events is not None:
        lines += _one("celery_flow_events_stored", "gauge", "Events in the store", report.store.events)
    if report.consumer.lag is not None:
        help_ = "Stream entries not yet folded into the store"
        lines += _one("celery_flow_consumer_lag", "gauge", help_, report.consumer.lag)
    for key, value in sorted(report.consumer.metrics.items()):
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        metric = "celery_flow_consumer_" + "".join(c if c.isalnum() else "_" for c in key)
        kind = "counter" if key.endswith("_total") else "gauge"
        lines += _one(metric, kind, f"Embedded consumer: {key}", float(value))
    rejected = [({"kind": kind}, float(count)) for kind, count in report.rejected.items()]
    lines += _family("celery_flow_events_rejected_total", "counter", "Malformed entries, by kind", rejected)
    help_ = "Events dropped by publishers whose broker was slow or down"
    lines += _one("celery_flow_publisher_dropped_total", "counter", help_, report.publisher_dropped)
    lines += _one("celery_flow_live_clients", "gauge", "Connected /api/live clients", report.live_clients)
    lines += _one("celery_flow_live_frames_total", "counter", "Frames queued to live clients", live_pushed)
    help_ = "Live clients disconnected for not keeping up"
    lines += _one("celery_flow_live_slow_disconnects_total", "counter", help_, live_slow_disconnects)
    return "\n".join(lines) + "\n"
