"""The schedule metrics as Prometheus sees them: `celery_flow_schedule_late{name}`,
`celery_flow_schedule_missed_total{name}` and `celery_flow_beat_up{hostname}` from a beat that went down
with one entry overdue; promtool accepts the exposition and a real Prometheus scrapes them."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from tests.integration.test_metrics_prometheus import (
    PROMETHEUS,
    PROMTOOL,
    needs,
    prometheus_scraping,
    promtool_check,
    samples,
    value_of,
)
from tests.support.events import event, finished_task
from tests.support.server_helpers import serving
from tests.support.wait import wait_for

from celery_flow.events import ScheduleInfo, ScheduleRun, encode
from celery_flow.server import create_app
from celery_flow.transport import from_url

pytestmark = pytest.mark.slow

OVERDUE, FINE = 'sync "invoices"', "nightly report"


def publish_beat(broker_url: str, prefix: str) -> None:
    """A beat that announced two entries, sent runs of the first every 10 s, and went offline 35 s ago
    with that entry due 30 s ago (missed 2 since, by a 10 s grace); the other is due in an hour."""
    now = time.time()
    beat = f"celerybeat@{prefix}"
    entries = [
        ScheduleInfo(
            name=OVERDUE, task="billing.sync", schedule="every 10s", interval=10.0, next_at=now - 30
        ),
        ScheduleInfo(name=FINE, task="reports.nightly", schedule="crontab(0 4 * * *)", next_at=now + 3600),
    ]
    events = [event("worker.online", hostname=beat, info={"role": "beat"}, ts=now - 100, schedules=entries)]
    for k in range(3):
        run = finished_task(f"{prefix}-run-{k}", now - 60 + 10 * k, name="billing.sync")
        run[0].schedule = ScheduleRun(entry=OVERDUE, due=run[0].ts, missed=1 if k == 1 else 0)
        events += run
    events.append(event("worker.offline", hostname=beat, ts=now - 35))
    transport = from_url(broker_url, prefix=prefix)
    try:
        transport.publish([encode(e) for e in events])
    finally:
        transport.close()


@needs(PROMETHEUS)
@needs(PROMTOOL)
def test_prometheus_scrapes_late_and_missed_schedules(
    redis_url: str, unique_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_FLOW_SCHEDULE_GRACE", "10s")
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=unique_prefix)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        publish_beat(redis_url, unique_prefix)

        def exported() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            values = samples(client.get("/metrics").text)
            return values if ("celery_flow_schedule_late", (("name", OVERDUE),)) in values else None

        values = wait_for(exported, 30, "the schedules in /metrics")
        body = client.get("/metrics").text
        checked = promtool_check(body)
        assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}\n{body}"
        assert values[("celery_flow_schedule_late", (("name", OVERDUE),))] == 1
        assert values[("celery_flow_schedule_late", (("name", FINE),))] == 0
        # 1 reported by beat, 2 due 20 s and 10 s after the overdue run, more than the grace ago.
        assert values[("celery_flow_schedule_missed_total", (("name", OVERDUE),))] >= 3
        assert values[("celery_flow_schedule_missed_total", (("name", FINE),))] == 0
        assert values[("celery_flow_beat_up", (("hostname", f"celerybeat@{unique_prefix}"),))] == 0
        with prometheus_scraping(base.removeprefix("http://"), tmp_path) as prom:
            job = 'job="celery-flow"'
            late = f'celery_flow_schedule_late{{{job},name="sync \\"invoices\\""}}'
            wait_for(lambda: value_of(prom, late) == 1, 60, "prometheus to scrape the late entry")
            missed = value_of(prom, f'celery_flow_schedule_missed_total{{{job},name="sync \\"invoices\\""}}')
            assert missed is not None
            assert missed >= 3
            assert value_of(prom, f"sum(celery_flow_schedule_late{{{job}}})") == 1
