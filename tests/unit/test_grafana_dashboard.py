"""docs/grafana/celery-flow.json queries only metrics a server exports: every `celery_flow_*` name in its
PromQL is a sample name of an exposition rendered from a real (SQLite) store holding tasks."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.support.events import event, finished_task

from celery_flow.events import ScheduleInfo
from celery_flow.server.health import ConsumerHealth, HealthReport, StoreHealth, TransportHealth
from celery_flow.server.metrics import (
    TASK_METRICS,
    ScheduleCollector,
    TaskCollector,
    metrics_registry,
    render,
)
from celery_flow.store import open_store

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "celery-flow.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported(tmp: Path) -> set[str]:
    """Every sample name a server with tasks, a worker, a backlog and a beat schedule exposes."""
    store = open_store(f"sqlite:///{tmp / 'f.db'}")
    try:
        store.apply(finished_task("t1", name="app.work", runtime=0.1, queue="q"))
        store.apply([event("sent", "t2", name="app.work", root_id="t2", queue="q")])
        store.apply([event("worker.online", None, hostname="celery@w")])
        entry = ScheduleInfo(
            name="nightly", task="app.work", schedule="every 60s", interval=60.0, next_at=0.0
        )
        store.apply([event("worker.online", None, hostname="celerybeat@w", schedules=[entry])])
        report = HealthReport(
            status="ok", version="x", transport=TransportHealth(url=None, reachable=True),
            store=StoreHealth(url=None, reachable=True, tasks=2, events=5),
            consumer=ConsumerHealth(mode="embedded", status="ok", lag=0), rejected={}, rejected_total=0,
            publisher_dropped=0, live_clients=0, checked_at=time.time(),
        )  # fmt: skip
        tasks, beat = TaskCollector(store.all_time, 100), ScheduleCollector(lambda: store.schedules(recent=0))
        registry = metrics_registry(lambda: report, lambda: (0, 0), tasks, beat)
        body = render(registry).decode()
    finally:
        store.close()
    return {
        family.name + suffix
        for family in text_string_to_metric_families(body)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL string of the dashboard: panel targets' `expr` and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield value["query"]
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def test_every_query_of_the_dashboard_names_an_exported_metric(tmp_path: Path) -> None:
    names = exported(tmp_path)
    exprs = list(expressions(json.loads(DASHBOARD.read_text())))
    assert len(exprs) >= 10
    for expr in exprs:
        used = set(re.findall(r"\bcelery_flow_\w+", expr))
        assert used, f"no celery-flow metric in {expr!r}"
        assert used <= names, f"{expr!r} names {sorted(used - names)}, not exported"


def test_the_dashboard_uses_every_task_metric() -> None:
    text = DASHBOARD.read_text()
    assert [m for m in TASK_METRICS if m not in text] == []
