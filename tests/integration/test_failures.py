"""Failures grouped by cause: GET /api/failures, /api/tasks?fingerprint= and a task's cluster_size.

Real worker, real broker, real HTTP: the tasks of tests/support/failing_tasks.py fail (or retry) in the
worker, the tracker publishes their events to Redis Streams or RabbitMQ, the server folds them into
SQLite or PostgreSQL. The store-level tests below the real-worker ones check the windows, buckets and
sparklines at exact times, retention and the re-fold, on both stores.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from tests.support.canvas_app import make_app
from tests.support.events import event
from tests.support.failing_tasks import register_failing
from tests.support.postgres import own_sql_store, own_store_url
from tests.support.server_helpers import serving
from tests.support.wait import tasks_finished, wait_for

import celery_flow
from celery_flow.server import create_app
from celery_flow.store.backfill import run
from celery_flow.store.failures import window
from celery_flow.store.migrations import schedule_refold
from celery_flow.store.sql import SqlStore

pytestmark = pytest.mark.slow

CHARGES = 20


@dataclass
class Ran:
    """What the failing tasks did, as the server sees it."""

    api: httpx.Client
    started: float
    charges: list[str]
    refund: str
    fetch: str
    fetch_always: str

    def failures(self, **params: Any) -> list[dict[str, Any]]:
        resp = self.api.get("/api/failures", params=params)
        resp.raise_for_status()
        items: list[dict[str, Any]] = resp.json()["items"]
        return items

    def cluster_of(self, task_id: str) -> dict[str, Any]:
        fingerprint = self.task(task_id)["fingerprint"]
        return next(c for c in self.failures() if c["fingerprint"] == fingerprint)

    def task(self, task_id: str) -> dict[str, Any]:
        resp = self.api.get(f"/api/tasks/{task_id}")
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body


# (store, celery-flow transport), as in test_flow_graphs.py: Celery itself runs on Redis.
@pytest.fixture(scope="module", params=["sqlite-redis", "postgresql-redis", "sqlite-amqp", "postgresql-amqp"])
def ran(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ran]:
    store_kind, transport = request.param.split("-")
    flow_url = redis_url if transport == "redis" else str(request.getfixturevalue("amqp_url"))
    prefix = f"cft_{uuid.uuid4().hex[:8]}"
    stores = own_store_url(store_kind, request, Path(tmp_path_factory.mktemp("failures")))
    store_url = next(stores)
    app: Celery = make_app(redis_url, redis_url, flow_url, prefix, queue=f"q_{prefix}")
    register_failing(app)
    server = create_app(broker_url=flow_url, store=store_url, prefix=prefix)
    try:
        with (
            serving(server) as url,
            httpx.Client(base_url=url, timeout=10) as api,
            start_worker(
                app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="CRITICAL",
                shutdown_timeout=10,
            ),
        ):  # fmt: skip
            started = time.time()
            t = app.tasks
            charges = [t["ft.charge"].delay(4000 + i * 37).id for i in range(CHARGES)]
            refund = t["ft.refund"].delay(4242).id
            fetch = t["ft.fetch"].delay("users", fail_times=2).id
            fetch_always = t["ft.fetch_always"].delay("orders").id
            ids = [*charges, refund, fetch, fetch_always]
            wait_for(lambda: tasks_finished(api, ids), 60, "every failing task to finish")
            yield Ran(api, started, charges, refund, fetch, fetch_always)
    finally:
        celery_flow.shutdown(app)
        stores.close()


def test_twenty_failures_of_one_bug_with_twenty_messages_are_one_cluster(ran: Ran) -> None:
    cluster = ran.cluster_of(ran.charges[0])
    assert {ran.task(task_id)["fingerprint"] for task_id in ran.charges} == {cluster["fingerprint"]}
    assert cluster["count"] == CHARGES
    assert cluster["retries"] == 0
    assert cluster["exception_type"] == "ValueError"
    assert cluster["message"] == "card <n> declined by gateway (request id <id>)"
    assert cluster["task_names"] == ["ft.charge"]
    assert ran.started <= cluster["first_seen"] <= cluster["last_seen"] <= time.time()
    assert sum(cluster["sparkline"]["counts"]) == CHARGES
    # Most failed tasks first: this cluster leads.
    assert ran.failures()[0]["fingerprint"] == cluster["fingerprint"]


def test_the_same_exception_from_another_function_is_another_cluster(ran: Ran) -> None:
    charge, refund = ran.cluster_of(ran.charges[0]), ran.cluster_of(ran.refund)
    assert refund["fingerprint"] != charge["fingerprint"]
    assert (refund["exception_type"], refund["message"]) == (charge["exception_type"], charge["message"])
    assert (refund["count"], refund["task_names"], refund["sample_task_ids"]) == (
        1,
        ["ft.refund"],
        [ran.refund],
    )


def test_retries_that_ended_in_success_count_as_retries_not_failures(ran: Ran) -> None:
    task = ran.task(ran.fetch)
    assert (task["state"], task["retries"]) == ("SUCCESS", 2)
    retried = [e for e in task["events"] if e["type"] == "retried"]
    assert len(retried) == 2
    assert {e["fingerprint"] for e in retried} == {task["fingerprint"]}
    cluster = ran.cluster_of(ran.fetch)
    assert (cluster["count"], cluster["retries"]) == (0, 2)
    assert (cluster["exception_type"], cluster["message"]) == (
        "ConnectionError",
        "could not reach '<s>' after <n> attempts",
    )
    assert cluster["sample_task_ids"] == [ran.fetch]
    assert cluster["sparkline"]["counts"] == [0] * len(cluster["sparkline"]["counts"])


def test_retries_and_the_final_failure_of_one_cause_are_one_cluster(ran: Ran) -> None:
    task = ran.task(ran.fetch_always)
    assert (task["state"], task["retries"]) == ("FAILURE", 2)
    cluster = ran.cluster_of(ran.fetch_always)
    assert (cluster["count"], cluster["retries"], cluster["exception_type"]) == (1, 2, "ConnectionError")
    assert cluster["fingerprint"] != ran.task(ran.fetch)["fingerprint"]  # raised through another task


def test_fingerprint_lists_exactly_the_clusters_tasks(ran: Ran) -> None:
    fingerprint = ran.task(ran.charges[0])["fingerprint"]
    listed: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"fingerprint": fingerprint, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        page = ran.api.get("/api/tasks", params=params).json()
        listed += [t["task_id"] for t in page["items"]]
        assert all(t["fingerprint"] == fingerprint for t in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(listed) == sorted(ran.charges)
    assert ran.api.get("/api/tasks", params={"fingerprint": "0" * 16}).json()["items"] == []


def test_samples_are_the_ten_newest_tasks(ran: Ran) -> None:
    cluster = ran.cluster_of(ran.charges[0])
    newest = [t["task_id"] for t in ran.api.get(
        "/api/tasks", params={"fingerprint": cluster["fingerprint"], "limit": 10}
    ).json()["items"]]  # fmt: skip
    assert cluster["sample_task_ids"] == newest
    assert len(newest) == 10
    assert set(newest) <= set(ran.charges)


def test_a_failed_tasks_detail_says_how_big_its_cluster_is(ran: Ran) -> None:
    assert ran.task(ran.charges[3])["cluster_size"] == CHARGES
    assert ran.task(ran.refund)["cluster_size"] == 1
    assert ran.task(ran.fetch)["cluster_size"] == 0  # retried, never failed


def test_since_until_and_name_filter_the_clusters(ran: Ran) -> None:
    everything = {c["fingerprint"] for c in ran.failures(since=ran.started - 300, until=time.time() + 300)}
    assert everything == {c["fingerprint"] for c in ran.failures()}
    assert len(everything) == 4
    assert ran.failures(since=time.time() + 3600) == []
    assert ran.failures(until=ran.started - 3600) == []
    refunds = ran.failures(name="ft.refund")
    assert [c["sample_task_ids"] for c in refunds] == [[ran.refund]]
    assert ran.failures(name="ft.nothing") == []
    assert ran.api.get("/api/failures", params={"since": 10, "until": 5}).status_code == 422


# -- store level: exact times, on both stores ------------------------------------------------------

T0 = 1_699_999_200.0  # a multiple of 3600: buckets of every width start here
TB = 'Traceback (most recent call last):\n  File "/srv/app/tasks.py", line {line}, in {function}\n{exc}\n'


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    yield from own_sql_store(request.param, request, tmp_path)


def failed(
    task_id: str, ts: float, function: str = "charge", name: str = "app.charge", n: int = 1
) -> list[Any]:
    exc = f"ValueError: order {n} failed"
    tb = TB.format(line=n, function=function, exc=exc)
    common = {"name": name, "root_id": task_id}
    return [
        event("sent", task_id, ts - 1, **common),
        event("started", task_id, ts - 0.5, hostname="celery@w", **common),
        event("failed", task_id, ts, hostname="celery@w", exception=exc, traceback=tb, **common),
    ]


def test_windows_count_whole_buckets_and_draw_a_sparkline(store: SqlStore) -> None:
    # Ten failures a minute apart from T0 + 30 s: buckets of a minute for a window under 24 minutes.
    for i in range(10):
        store.apply(failed(f"t{i}", T0 + 30 + 60 * i, n=i))
    [cluster] = store.failures(T0, T0 + 600, None)
    assert (cluster.count, cluster.first_seen, cluster.last_seen) == (10, T0 + 30, T0 + 570)
    assert cluster.sparkline.start == T0
    assert cluster.sparkline.step == 60
    assert cluster.sparkline.counts == [1] * 10
    # Whole minutes: `since` is rounded down to the start of its minute, `until` up to the end of its
    # minute, so T0 + 170 to T0 + 330 counts the failures at 150, 210, 270 and 330 s.
    [part] = store.failures(T0 + 170, T0 + 330, None)
    assert part.count == 4
    assert part.sample_task_ids == ["t5", "t4", "t3", "t2"]
    assert part.sparkline.start == T0 + 120
    assert store.failures(T0 + 600, T0 + 900, None) == []
    # A day's window counts in hours: one bucket holds all ten.
    [day] = store.failures(T0, T0 + 86_400, None)
    assert (day.count, day.sparkline.step, day.sparkline.counts[0], len(day.sparkline.counts)) == (
        10,
        3600,
        10,
        24,
    )
    assert window(T0, T0 + 30 * 86_400).points <= 60


def test_counts_follow_a_task_that_leaves_its_cluster_and_retention(store: SqlStore) -> None:
    a = failed("a", T0 + 10, function="charge")
    store.apply(a)
    store.apply(failed("b", T0 + 20, function="refund"))
    counts = {c.fingerprint: c.count for c in store.failures(T0, T0 + 3600, None)}
    assert sorted(counts.values()) == [1, 1]
    store.apply(a)  # delivered again: nothing moves
    assert {c.fingerprint: c.count for c in store.failures(T0, T0 + 3600, None)} == counts
    # A redelivered run of "a" succeeded after all: it leaves its cluster, which is gone.
    store.apply([event("succeeded", "a", T0 + 30, name="app.charge", root_id="a", hostname="celery@w")])
    b = store.get_task("b")
    assert b is not None
    assert b.cluster_size == 1
    assert [(c.fingerprint, c.count) for c in store.failures(T0, T0 + 3600, None)] == [(b.fingerprint, 1)]
    store.sweep(ttl=None, max_tasks=0)
    assert store.failures(None, None, None) == []
    for table in ("failure_counts", "failure_clusters"):
        assert store._reading(lambda s, t=table: s.rows(f"SELECT COUNT(*) FROM {t}"))[0][0] == 0


def retried_then_succeeded(task_id: str, ts: float) -> list[Any]:
    """Two retries for a ConnectionError in `fetch`, then a success."""
    common = {"name": "app.fetch", "root_id": task_id}
    exc = "Retry: Retry in 1s: ConnectionError('cache-7 unreachable')"
    tb = TB.format(line=3, function="fetch", exc="celery.exceptions." + exc)
    out = [event("sent", task_id, ts, **common)]
    for attempt in range(2):
        t = ts + 10 * attempt
        out += [
            event("started", task_id, t + 1, hostname="celery@w", retries=attempt, **common),
            event("retried", task_id, t + 2, hostname="celery@w", retries=attempt, exception=exc,
                  traceback=tb, reason=exc, **common),
            event("sent", task_id, t + 3, retries=attempt + 1, **common),
        ]  # fmt: skip
    return [*out, event("succeeded", task_id, ts + 30, hostname="celery@w", retries=2, **common)]


def test_the_refold_after_migration_counts_what_older_folds_left_uncounted(store: SqlStore) -> None:
    events = [
        e for i in range(30) for e in failed(f"f{i}", T0 + 40 * i, function=("charge", "refund")[i % 2])
    ]
    events += [e for i in range(5) for e in retried_then_succeeded(f"r{i}", T0 + 100 * i)]
    store.apply(events)
    want = store.failures(T0, T0 + 3600, None)
    assert sorted((c.count, c.retries) for c in want) == [(0, 10), (15, 0), (15, 0)]

    def older_fold(s: Any, _seq: int) -> None:
        """As a schema 3 store is before its re-fold: no fingerprints, no retry causes, no clusters."""
        for task_id, extra in s.rows("SELECT task_id, extra FROM tasks"):
            kept = {k: v for k, v in json.loads(extra).items() if k != "rfp"}
            s.run(
                "UPDATE tasks SET fingerprint = NULL, extra = ? WHERE task_id = ?",
                (json.dumps(kept), task_id),
            )
        s.run("DELETE FROM failure_counts")
        s.run("DELETE FROM failure_clusters")
        schedule_refold(s)

    store._writing(older_fold)
    assert store.failures(T0, T0 + 3600, None) == []
    run(store, limit=7)
    assert store.failures(T0, T0 + 3600, None) == want


def test_extreme_times_are_counted_without_breaking_the_batch(store: SqlStore) -> None:
    """Whatever `events.decode` accepts, the clusters take (a poison batch would block the stream)."""
    from celery_flow.events import decode

    raws = [
        b'{"v":1,"id":"y1","type":"failed","ts":1e300,"task_id":"far","name":"n","exception":"KeyError: 1"}',
        b'{"v":1,"id":"y2","type":"retried","ts":-1e300,"task_id":"past","name":"n","exception":"Retry: x"}',
        b'{"v":1,"id":"y3","type":"failed","ts":-1e300,"task_id":"early","name":"n","exception":"KeyError"}',
    ]
    assert sorted(store.apply([decode(raw) for raw in raws])) == ["early", "far", "past"]
    clusters = store.failures(0, 2e12, None)
    assert sorted((c.count, c.retries) for c in clusters) == [(0, 1), (2, 0)]
    assert all(0 <= c.first_seen <= c.last_seen <= 1e12 for c in clusters)
