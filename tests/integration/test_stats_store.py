"""The overview's counts (store/stats.py) at exact times, on both stores: heatmap buckets, trends and the
regression rule, the backlog per queue, retention, the re-fold that fills a migrated store, and the
worker fields. Events are built with chosen timestamps (tests/support/events.py) and folded straight into
the store; tests/integration/test_stats.py runs the same figures with a real worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.events import event
from tests.support.postgres import own_sql_store

from celery_flow.store import stats
from celery_flow.store.backfill import run
from celery_flow.store.base import TaskFilter
from celery_flow.store.migrations import schedule_refold
from celery_flow.store.rows import TASK_SELECT, TaskRow, fetch
from celery_flow.store.sql import SqlStore
from celery_flow.store.stats import EDGES, slot

T0 = 1_699_999_200.0  # a multiple of 3600: buckets of every width start here


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore[Any]]:
    yield from own_sql_store(request.param, request, tmp_path)


def run_of(
    task_id: str,
    ts: float,
    runtime: float,
    name: str = "app.work",
    queue: str = "default",
    wait: float = 0.5,
    final: str = "succeeded",
    hostname: str = "celery@w",
) -> list[Any]:
    """One run finishing at `ts`: sent `wait` seconds before it started, `runtime` seconds long."""
    common = {"name": name, "root_id": task_id, "queue": queue}
    started = ts - runtime
    return [
        event("sent", task_id, started - wait, **common),
        event("received", task_id, started - wait / 2, hostname=hostname, **common),
        event("started", task_id, started, hostname=hostname, **common),
        event(final, task_id, ts, hostname=hostname, runtime=runtime, **common),
    ]


def column_of(edges: list[float], seconds: float) -> int:
    return next(j for j in range(len(edges) - 1) if edges[j] < seconds <= edges[j + 1])


def test_heatmap_puts_each_run_in_its_time_and_duration_bucket(store: SqlStore[Any]) -> None:
    events = [e for i in range(30) for e in run_of(f"fast{i}", T0 + 10 + i, 0.010)]
    events += [e for i in range(10) for e in run_of(f"slow{i}", T0 + 70 + i, 0.300)]
    events += [e for e in run_of("other", T0 + 20, 5.0, name="app.other")]
    store.apply(events)
    h = store.heatmap("app.work", "runtime", T0, T0 + 600)
    assert (h.name, h.metric) == ("app.work", "runtime")
    assert h.time_edges[:3] == [T0, T0 + 60, T0 + 120]
    assert len(h.counts) == len(h.time_edges) - 1
    assert all(len(row) == len(h.value_edges) - 1 for row in h.counts)
    assert sum(map(sum, h.counts)) == 40
    fast, slow = column_of(h.value_edges, 0.010), column_of(h.value_edges, 0.300)
    assert h.counts[0][fast] == 30
    assert h.counts[1][slow] == 10
    everything = store.heatmap(None, "runtime", T0, T0 + 600)
    assert sum(map(sum, everything.counts)) == 41
    waits = store.heatmap("app.work", "queue_wait", T0, T0 + 600)
    assert sum(map(sum, waits.counts)) == 40
    assert sum(row[column_of(waits.value_edges, 0.5)] for row in waits.counts) == 40
    assert store.heatmap("app.none", "runtime", T0, T0 + 600).counts == [[0]] * 10


def test_slots_are_log_spaced_and_bound_every_duration() -> None:
    assert EDGES[0] == 0.001
    assert EDGES[4] == 0.01
    assert EDGES[-1] == 10_000
    assert [slot(x) for x in (0.0, 0.001, 0.0011, 0.01, 20_000.0)] == [0, 0, 1, 4, len(EDGES)]


def test_a_name_three_times_slower_in_the_second_half_is_a_regression(store: SqlStore[Any]) -> None:
    # A two-hour window in minutes: the first hour is "before", the second "after".
    events = []
    for i in range(25):
        events += run_of(f"b{i}", T0 + 60 + i * 60, 0.1, name="app.slower")
        events += run_of(f"a{i}", T0 + 3600 + 60 + i * 60, 0.3, name="app.slower")
        events += run_of(f"sb{i}", T0 + 60 + i * 60, 0.1, name="app.steady")
        events += run_of(f"sa{i}", T0 + 3600 + 60 + i * 60, 0.11, name="app.steady")
    for i in range(10):  # too few runs to judge
        events += run_of(f"fb{i}", T0 + 60 + i, 0.1, name="app.few")
        events += run_of(f"fa{i}", T0 + 3600 + 60 + i, 1.0, name="app.few")
    store.apply(events)
    trend = store.name_trend("app.slower", T0, T0 + 7200)
    assert trend.regression is not None
    r = trend.regression
    assert (r.name, r.runs_before, r.runs_after) == ("app.slower", 25, 25)
    assert r.p95_before == pytest.approx(0.1)
    assert r.p95_after == pytest.approx(0.3)
    assert r.ratio == pytest.approx(3.0)
    assert sum(trend.runs) == 50
    assert sum(trend.failures) == 0
    assert next(p for p in trend.p95 if p is not None) == pytest.approx(0.1)
    assert [p for p in trend.p95 if p is not None][-1] == pytest.approx(0.3)
    assert store.name_trend("app.steady", T0, T0 + 7200).regression is None
    assert store.name_trend("app.few", T0, T0 + 7200).regression is None
    overview = store.overview(T0, T0 + 7200)
    assert [r.name for r in overview.regressions] == ["app.slower"]
    assert [s.name for s in overview.slowest] == ["app.few", "app.slower", "app.steady"]


def test_overview_counts_throughput_by_final_state_and_the_failure_rate(store: SqlStore[Any]) -> None:
    events = [e for i in range(6) for e in run_of(f"ok{i}", T0 + 100 + i, 0.01)]
    events += [e for i in range(2) for e in run_of(f"ko{i}", T0 + 200 + i, 0.01, final="failed")]
    events += [event("sent", "waiting", T0 + 50, name="app.work", root_id="waiting", queue="q1")]
    store.apply(events)
    o = store.overview(T0, T0 + 3600)
    assert (o.since, o.until) == (T0, T0 + 3600)
    assert sum(o.throughput["SUCCESS"]) == 6
    assert sum(o.throughput["FAILURE"]) == 2
    assert set(o.throughput) == {"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST"}
    assert len(o.throughput["SUCCESS"]) == len(o.time_edges) - 1
    assert (o.finished, o.failed, o.failure_rate) == (8, 2, 0.25)
    assert [(b.queue, b.waiting) for b in o.backlog] == [("q1", 1)]
    assert len(o.top_failures) == 1
    assert o.top_failures[0].count == 2
    assert (o.lost, o.stuck) == (0, 0)
    empty = store.overview(T0 + 86_400, T0 + 90_000)
    assert (empty.finished, empty.failure_rate) == (0, None)


def test_only_failures_count_as_failed_as_in_the_registry(store: SqlStore[Any]) -> None:
    events = [e for i in range(2) for e in run_of(f"ok{i}", T0 + 10 + i, 0.01)]
    events += run_of("ko", T0 + 20, 0.01, final="failed")
    events += run_of("stop", T0 + 30, 0.01, final="revoked")
    store.apply(events)
    o = store.overview(T0, T0 + 3600)
    registry = next(r for r in store.registry() if r.name == "app.work")
    assert (o.finished, o.failed, o.failure_rate) == (4, 1, 0.25) == (4, 1, registry.failure_rate)
    assert o.failure_rates[0] == 0.25  # the four ended in the first minute; no other minute has any
    assert set(o.failure_rates[1:]) == {None}
    assert sum(store.name_trend("app.work", T0, T0 + 3600).failures) == 1
    assert {w.hostname: w.failed for w in store.workers()} == {"celery@w": 1}


def test_backlog_follows_sent_and_received_per_queue(store: SqlStore[Any]) -> None:
    store.apply(
        [event("sent", f"t{i}", T0 + i, name="app.work", root_id=f"t{i}", queue="slow") for i in range(5)]
    )
    store.apply([event("sent", "u", T0, name="app.work", root_id="u", queue="fast")])
    assert [(b.queue, b.waiting) for b in store.overview(T0, T0 + 60).backlog] == [("slow", 5), ("fast", 1)]
    page = store.list_tasks(TaskFilter(queue="slow", state="PENDING"), 100, None)
    assert sorted(t.task_id for t in page.items) == [f"t{i}" for i in range(5)]
    store.apply([event("received", f"t{i}", T0 + 10, hostname="celery@w", name="app.work") for i in range(3)])
    assert [(b.queue, b.waiting) for b in store.overview(T0, T0 + 60).backlog] == [("slow", 2), ("fast", 1)]
    store.sweep(ttl=None, max_tasks=0)
    assert store.overview(T0, T0 + 60).backlog == []


def test_retention_lowers_the_windows_but_not_the_all_time_counts(store: SqlStore[Any]) -> None:
    store.apply([e for i in range(4) for e in run_of(f"t{i}", T0 + i, 0.02)])
    before = store.all_time()
    assert before.finished == {("app.work", "SUCCESS"): 4}
    assert before.durations[("runtime", "app.work", "default")].count == 4
    store.sweep(ttl=None, max_tasks=1)
    assert store.overview(T0, T0 + 60).finished == 1
    assert sum(map(sum, store.heatmap(None, "runtime", T0, T0 + 60).counts)) == 1
    assert store.all_time() == before


def test_a_task_that_changes_state_moves_its_counts(store: SqlStore[Any]) -> None:
    store.apply(run_of("t", T0 + 10, 0.02, final="failed"))
    assert store.overview(T0, T0 + 60).failed == 1
    store.apply(run_of("t", T0 + 10, 0.02, final="failed"))  # delivered again: nothing moves
    assert store.overview(T0, T0 + 60).failed == 1
    # A later success at another time wins: the failure leaves its bucket.
    store.apply(
        [event("succeeded", "t", T0 + 130, name="app.work", root_id="t", runtime=2.0, queue="default")]
    )
    o = store.overview(T0, T0 + 600)
    assert (o.finished, o.failed, sum(o.throughput["SUCCESS"])) == (1, 0, 1)
    h = store.heatmap("app.work", "runtime", T0, T0 + 600)
    assert sum(map(sum, h.counts)) == 1
    assert sum(h.counts[2]) == 1


def test_the_refold_after_migration_fills_the_counts(store: SqlStore[Any]) -> None:
    events = [e for i in range(30) for e in run_of(f"t{i}", T0 + 40 * i, 0.01 * (1 + i % 3))]
    events += [e for i in range(5) for e in run_of(f"f{i}", T0 + 100 * i, 0.5, final="failed")]
    events += [event("sent", f"p{i}", T0 + i, name="app.work", root_id=f"p{i}", queue="q") for i in range(7)]
    store.apply(events)
    want = (store.overview(T0, T0 + 3600), store.heatmap(None, "queue_wait", T0, T0 + 3600), store.all_time())
    failed = {w.hostname: w.failed for w in store.workers()}
    assert failed == {"celery@w": 5}

    def older_store(s: Any, _seq: int) -> None:
        """As a schema 3 store is right after its migration to 4: tables empty, stats_end set."""
        for table in ("finished_counts", "duration_counts", "queue_backlog"):
            s.run(f"DELETE FROM {table}")
        s.run("UPDATE workers SET tasks_failed = 0")
        s.run("INSERT INTO meta (key, value) SELECT 'stats_end', value FROM meta WHERE key = 'task_num'")
        schedule_refold(s)

    store._writing(older_store)
    assert store.overview(T0, T0 + 3600).finished == 0
    # A consumer writes meanwhile: a task not re-folded yet changes, another is new.
    store.apply([event("received", "p0", T0 + 5, hostname="celery@w", name="app.work")])
    store.apply(run_of("new", T0 + 300, 0.01))
    run(store, limit=7)
    overview, heat, totals = (
        store.overview(T0, T0 + 3600),
        store.heatmap(None, "queue_wait", T0, T0 + 3600),
        store.all_time(),
    )
    assert overview.finished == want[0].finished + 1
    assert [(b.queue, b.waiting) for b in overview.backlog] == [("q", 6)]
    assert sum(map(sum, heat.counts)) == sum(map(sum, want[1].counts)) + 1
    assert sum(totals.finished.values()) == sum(want[2].finished.values()) + 1
    assert {w.hostname: w.failed for w in store.workers()} == failed
    assert store._reading(lambda s: s.rows("SELECT COUNT(*) FROM meta WHERE key = 'stats_end'"))[0][0] == 0


def test_workers_say_pool_queues_what_runs_and_what_failed(store: SqlStore[Any]) -> None:
    info = {"pool": "prefork", "concurrency": 4, "queues": ["a", "b"]}
    store.apply([event("worker.online", None, T0, hostname="celery@w", info=info)])
    store.apply(run_of("ok", T0 + 10, 0.01) + run_of("ko", T0 + 11, 0.01, final="failed"))
    store.apply(
        [event("started", "running", T0 + 12, hostname="celery@w", name="app.work", root_id="running")]
    )
    store.apply([event("worker.offline", None, T0 + 20, hostname="celery@w")])
    [w] = store.workers()
    assert (w.pool, w.concurrency, w.queues) == ("prefork", 4, ["a", "b"])
    assert (w.tasks_run, w.failed, w.offline_at) == (3, 1, T0 + 20)  # the running task became LOST
    assert w.running == 0
    o = store.overview(T0, T0 + 60)
    assert (o.workers_online, o.workers_offline, o.lost) == (0, 1, 1)


def test_queue_wait_and_runtime_histograms_keep_sums_for_prometheus(store: SqlStore[Any]) -> None:
    store.apply([e for i in range(3) for e in run_of(f"t{i}", T0 + i, 0.25, wait=2.0)])
    totals = store.all_time()
    runtime = totals.durations[("runtime", "app.work", "default")]
    wait = totals.durations[("queue_wait", "app.work", "default")]
    assert (runtime.count, sum(runtime.total)) == (3, pytest.approx(0.75))
    assert (wait.count, sum(wait.total)) == (3, pytest.approx(6.0))
    assert json.dumps(sorted(totals.finished.items()))


def test_a_refold_that_derives_other_runtimes_moves_the_counts(store: SqlStore[Any]) -> None:
    """Rows an older fold rule left without a runtime, counted as they were: the re-fold derives the
    runtimes again from the events, and the counts follow."""
    store.apply([e for i in range(10) for e in run_of(f"t{i}", T0 + 10 * i, 0.02 * (i + 1))])
    want = (store.heatmap(None, "runtime", T0, T0 + 600), store.all_time())

    def older_rule(s: Any, _seq: int) -> None:
        s.run("UPDATE tasks SET runtime = NULL WHERE task_id IN ('t0', 't1', 't2')")
        for table in ("finished_counts", "duration_counts", "queue_backlog"):
            s.run(f"DELETE FROM {table}")
        stats.fill(s, fetch(s, TaskRow, TASK_SELECT))  # the counts of those rows
        schedule_refold(s)

    store._writing(older_rule)
    assert sum(map(sum, store.heatmap(None, "runtime", T0, T0 + 600).counts)) == 7
    run(store, limit=4)
    assert store.heatmap(None, "runtime", T0, T0 + 600) == want[0]
    got = store.all_time()
    assert got.finished == want[1].finished
    for key, hist in want[1].durations.items():
        assert got.durations[key].runs == hist.runs
        assert got.durations[key].total == pytest.approx(hist.total)
