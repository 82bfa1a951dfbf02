"""The store against both real engines: a SQLite file and a PostgreSQL schema of its own per test."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.events import event
from tests.support.postgres import own_store_url

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL, Event, TaskInfo
from celery_flow.flow.flows import summarize_flow
from celery_flow.store import StoreError, TaskFilter, open_store
from celery_flow.store.sql import SqlStore
from celery_flow.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0


def run(
    task_id: str,
    t: float,
    name: str = "app.add",
    root: str | None = None,
    host: str = "celery@w1",
    parent: str | None = None,
    outcome: str = "succeeded",
    runtime: float = 0.5,
    **lineage: Any,
) -> list[Event]:
    """The four events of one successful (or failed) attempt."""
    root = root or task_id
    common: dict[str, Any] = {
        "name": name,
        "root_id": root,
        "parent_id": parent,
        "trace_id": lineage.pop("trace", None),
    }
    end: dict[str, Any] = {"runtime": runtime}
    if outcome == "failed":
        end.update(exception="ValueError('x')", traceback="Traceback...\nValueError: x")
    else:
        end["result"] = {"ok": True}
    return [
        event("sent", task_id, t, args=[1, 2], kwargs={"k": "v"}, queue="celery", **common, **lineage),
        event("received", task_id, t + 1, hostname=host, **common),
        event("started", task_id, t + 2, hostname=host, pid=42, **common),
        event(outcome, task_id, t + 2 + runtime, hostname=host, **common, **end),
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    urls = own_store_url(request.param, request, tmp_path)
    try:
        yield next(urls)
    finally:
        urls.close()


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    s = open_store(store_url)
    assert isinstance(s, SqlStore)
    yield s
    s.close()


def all_pages(fetch: Any, limit: int) -> list[Any]:
    items: list[Any] = []
    cursor = None
    for _ in range(1000):
        page = fetch(limit, cursor)
        assert len(page.items) <= limit
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise AssertionError("paging never ended")


def test_applying_an_event_twice_changes_nothing(store: SqlStore) -> None:
    events = run("t1", T0)
    assert store.apply(events) == ["t1"]
    before = store.get_task("t1")
    assert store.apply(events) == []
    assert store.apply(events[:2] + events[:2]) == []
    assert store.get_task("t1") == before
    assert store.stats().events == 4
    assert store.stats().tasks == 1
    flow = store.list_flows(TaskFilter(), 10, None).items[0]
    assert flow.counts == {"SUCCESS": 1}
    assert flow.task_count == 1


def test_out_of_order_arrival_gives_the_same_task_in_every_order(store: SqlStore) -> None:
    canonical = None
    for n, order in enumerate(itertools.permutations(range(4))):
        task_id = f"perm{n}"
        events = run(task_id, T0)
        for i in order:  # one event per transaction: the worst case for an incremental fold
            store.apply([events[i]])
        task = store.get_task(task_id)
        assert task is not None
        assert task.state == "SUCCESS"
        assert (task.sent_at, task.received_at, task.started_at, task.finished_at) == (
            T0,
            T0 + 1,
            T0 + 2,
            T0 + 2.5,
        )
        assert [e.type for e in task.events] == ["sent", "received", "started", "succeeded"]
        assert [s.kind for s in task.segments] == ["queued", "received", "running"]
        shape = (task.state, task.result, task.args, task.kwargs, task.durations, task.runtime, task.hostname)
        canonical = canonical or shape
        assert shape == canonical
    summary = store.list_tasks(TaskFilter(q="perm23"), 5, None).items[0]
    assert summary.state == "SUCCESS"
    assert summary.durations == {
        "PENDING": 1.0,
        "RECEIVED": 1.0,
        "STARTED": 0.5,
    }


def test_retries_fold_by_attempt(store: SqlStore) -> None:
    common = {"name": "app.flaky", "root_id": "r"}
    events = [
        event("sent", "r", T0, retries=0, **common),
        event("received", "r", T0 + 1, retries=0, hostname="celery@w1", **common),
        event("started", "r", T0 + 2, retries=0, hostname="celery@w1", **common),
        event("retried", "r", T0 + 3, retries=0, hostname="celery@w1", reason="ConnectionError()", **common),
        event("sent", "r", T0 + 3.1, retries=1, parent_id="r", **common),
        event("received", "r", T0 + 4, retries=1, hostname="celery@w2", **common),
        event("started", "r", T0 + 5, retries=1, hostname="celery@w2", **common),
        event("succeeded", "r", T0 + 6, retries=1, hostname="celery@w2", runtime=1.0, result=7, **common),
    ]
    store.apply(list(reversed(events[4:])))
    store.apply(list(reversed(events[:4])))
    task = store.get_task("r")
    assert task is not None
    assert (task.state, task.retries, task.hostname, task.result, task.parent_id) == (
        "SUCCESS",
        1,
        "celery@w2",
        7,
        None,
    )
    assert [s.kind for s in task.segments] == [
        "queued",
        "received",
        "running",
        "retry",
        "queued",
        "received",
        "running",
    ]
    # The retry stays one task: one flow row with one successful task.
    flow = store.list_flows(TaskFilter(), 10, None).items[0]
    assert (flow.task_count, flow.counts, flow.state) == (1, {"SUCCESS": 1}, "SUCCESS")


def test_child_before_parent_links_and_flow_row_follows(store: SqlStore) -> None:
    child = run("child", T0 + 10, name="app.child", root="root", parent="root", trace="tr1")
    store.apply(child)
    flow = store.list_flows(TaskFilter(), 10, None).items[0]
    assert (flow.root_id, flow.root_name, flow.task_count, flow.state) == ("root", None, 1, "SUCCESS")
    store.apply(run("root", T0, name="app.root", trace="tr1")[:3])  # root still running
    parent = store.get_task("root")
    assert parent is not None
    assert parent.children == ["child"]
    flow = store.list_flows(TaskFilter(), 10, None).items[0]
    assert (flow.root_name, flow.task_count, flow.state, flow.started_at, flow.finished_at) == (
        "app.root", 2, "RUNNING", T0, None,
    )  # fmt: skip
    store.apply(run("root", T0, name="app.root", trace="tr1")[3:])
    flow = store.list_flows(TaskFilter(), 10, None).items[0]
    assert flow.state == "SUCCESS"
    assert flow.finished_at == T0 + 12.5
    assert flow.duration == 12.5
    graph = store.flow_tasks("root")
    assert {t.task_id for t in graph} == {"root", "child"}
    assert all(t.segments for t in graph)
    view = store.trace("tr1")
    assert view is not None
    assert [f.root_id for f in view.flows] == ["root"]
    assert len(view.tasks) == 2
    assert store.trace("nope") is None


def _populate(store: SqlStore) -> dict[str, dict[str, Any]]:
    """60 flows of 3 tasks, varied names, hosts, states and times; returns facts per task."""
    facts: dict[str, dict[str, Any]] = {}
    batch: list[Event] = []
    for i in range(60):
        root = f"flow{i:03d}"
        t = T0 + i * 10
        for j, name in enumerate(("app.fetch", "app.parse", "app.Store")):
            task_id = root if j == 0 else f"{root}-{j}"
            host = f"celery@w{i % 3}"
            outcome = "failed" if (i % 7 == 0 and j == 2) else "succeeded"
            events = run(task_id, t + j, name=name, root=root, host=host, parent=None if j == 0 else root,
                         outcome=outcome, trace=f"trace{i % 5}")  # fmt: skip
            if i % 11 == 0 and j == 1:
                events = events[:3]  # still running
            batch += events
            state = {"succeeded": "SUCCESS", "failed": "FAILURE"}[outcome] if len(events) == 4 else "STARTED"
            facts[task_id] = {"name": name, "root": root, "host": host, "state": state, "ts": t + j,
                              "trace": f"trace{i % 5}"}  # fmt: skip
    for start in range(0, len(batch), 97):
        store.apply(batch[start : start + 97])
    return facts


def test_task_filters_and_paging_have_no_gaps_or_duplicates(store: SqlStore) -> None:
    facts = _populate(store)
    everything = all_pages(lambda n, c: store.list_tasks(TaskFilter(), n, c), 7)
    assert [t.task_id for t in everything] == sorted(facts, key=lambda k: (facts[k]["ts"], k), reverse=True)
    cases: list[tuple[TaskFilter, Any]] = [
        (TaskFilter(state="FAILURE"), lambda f: f["state"] == "FAILURE"),
        (TaskFilter(state="STARTED"), lambda f: f["state"] == "STARTED"),
        (TaskFilter(name="app.parse"), lambda f: f["name"] == "app.parse"),
        (TaskFilter(root_id="flow007"), lambda f: f["root"] == "flow007"),
        (TaskFilter(trace_id="trace3"), lambda f: f["trace"] == "trace3"),
        (TaskFilter(worker="celery@w1"), lambda f: f["host"] == "celery@w1"),
        (TaskFilter(worker="celery@w1", state="SUCCESS"),
         lambda f: f["host"] == "celery@w1" and f["state"] == "SUCCESS"),
        (TaskFilter(since=T0 + 100, until=T0 + 200), lambda f: T0 + 100 <= f["ts"] < T0 + 200),
        (TaskFilter(q="STORE"), lambda f: f["name"] == "app.Store"),  # names: case-insensitive substring
        (TaskFilter(q="app."), lambda f: True),
        (TaskFilter(q="flow01"), lambda f: f["root"].startswith("flow01")),  # ids: prefix
        (TaskFilter(q="flow012-2"), lambda f: False),
        (TaskFilter(q="low01"), lambda f: False),  # not a prefix of any id nor part of a name
        (TaskFilter(q="pars", state="SUCCESS", worker="celery@w2"),
         lambda f: f["name"] == "app.parse" and f["state"] == "SUCCESS" and f["host"] == "celery@w2"),
    ]  # fmt: skip
    for filt, pred in cases:
        got = all_pages(lambda n, c, filt=filt: store.list_tasks(filt, n, c), 4)
        ids = [t.task_id for t in got]
        expected = {k for k, f in facts.items() if pred(f)} | (
            {"flow012-2"} if filt.q == "flow012-2" else set()
        )
        assert len(ids) == len(set(ids)), filt
        assert set(ids) == expected, filt
        assert [t.task_id for t in got] == sorted(ids, key=lambda k: (facts[k]["ts"], k), reverse=True), filt
    with pytest.raises(ValueError, match="cursor"):
        store.list_tasks(TaskFilter(), 5, "not-a-cursor")
    with pytest.raises(ValueError, match="cursor"):
        store.list_flows(TaskFilter(), 5, "eyJhIjoxfQ")


def test_flow_rows_filters_and_paging(store: SqlStore) -> None:
    facts = _populate(store)
    flows = all_pages(lambda n, c: store.list_flows(TaskFilter(), n, c), 8)
    assert [f.root_id for f in flows] == [f"flow{i:03d}" for i in reversed(range(60))]
    by_id = {f.root_id: f for f in flows}
    assert by_id["flow007"].state == "FAILURE"
    assert by_id["flow007"].counts == {"SUCCESS": 2, "FAILURE": 1}
    assert by_id["flow011"].state == "RUNNING"
    assert by_id["flow011"].finished_at is None
    ok = by_id["flow001"]
    assert (ok.state, ok.task_count, ok.root_name, ok.started_at, ok.duration) == (
        "SUCCESS",
        3,
        "app.fetch",
        T0 + 10,
        4.5,
    )
    failed = all_pages(lambda n, c: store.list_flows(TaskFilter(state="FAILURE"), n, c), 3)
    assert {f.root_id for f in failed} == {f"flow{i:03d}" for i in range(0, 60, 7) if i % 11 != 0} | {
        "flow000"
    }
    on_w2 = all_pages(lambda n, c: store.list_flows(TaskFilter(worker="celery@w2"), n, c), 5)
    assert {f.root_id for f in on_w2} == {f["root"] for f in facts.values() if f["host"] == "celery@w2"}
    assert [f.root_id for f in store.list_flows(TaskFilter(q="flow05"), 50, None).items] == [
        f"flow05{i}" for i in reversed(range(10))
    ]
    assert store.list_flows(TaskFilter(name="app.parse"), 5, None).items == []
    assert len(all_pages(lambda n, c: store.list_flows(TaskFilter(name="app.fetch"), n, c), 7)) == 60
    assert {f.root_id for f in store.list_flows(TaskFilter(trace_id="trace2"), 50, None).items} == {
        f"flow{i:03d}" for i in range(2, 60, 5)
    }


def test_registry_counts_failure_rate_and_percentiles(store: SqlStore) -> None:
    events: list[Event] = []
    for i in range(20):
        outcome = "failed" if i < 5 else "succeeded"
        events += run(f"r{i}", T0 + i, name="app.work", outcome=outcome, runtime=float(i + 1))
    events.append(
        event("worker.online", ts=time.time(), hostname="celery@w1",
              tasks=[TaskInfo(name="app.work", signature="(x, y)", doc="Does work."),
                     TaskInfo(name="app.idle")])
    )  # fmt: skip
    store.apply(events)
    registry = {r.name: r for r in store.registry()}
    work = registry["app.work"]
    assert (work.counts, work.total, work.failure_rate) == ({"SUCCESS": 15, "FAILURE": 5}, 20, 0.25)
    assert (work.p50, work.p95) == (10.0, 19.0)
    assert (work.signature, work.doc, work.workers) == ("(x, y)", "Does work.", ["celery@w1"])
    idle = registry["app.idle"]
    assert (idle.total, idle.p50, idle.workers) == (0, None, ["celery@w1"])


def test_registry_gives_each_name_the_percentiles_of_its_own_runtimes(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the names are split over statements, no name gets another's runtimes."""
    import celery_flow.store.queries as queries

    monkeypatch.setattr(queries, "RUNTIME_NAMES", 2)
    store.apply(
        [
            e
            for k in range(5)
            for i in range(10)
            for e in run(f"n{k}-{i}", T0 + i, name=f"app.n{k}", runtime=float(100 * k + i + 1))
        ]
    )
    got = {r.name: (r.p50, r.p95) for r in store.registry()}
    assert got == {f"app.n{k}": (100.0 * k + 5, 100.0 * k + 10) for k in range(5)}


def test_registry_reads_the_same_few_statements_for_any_number_of_names() -> None:
    """The registry page costs no round trip per task name (what a PostgreSQL store would feel)."""

    def statements(names: int) -> list[str]:
        store = open_store("sqlite:///:memory:")
        assert isinstance(store, SQLiteStore)
        try:
            store.apply([e for k in range(names) for e in run(f"t{k}", T0 + k, name=f"app.t{k}")])
            seen: list[str] = []
            store._conn().set_trace_callback(seen.append)
            assert len(store.registry()) == names
            return seen
        finally:
            store.close()

    few = statements(3)
    assert len(few) <= 3
    assert len(statements(60)) == len(few)


def test_flow_rows_agree_with_the_summary_of_their_tasks(store: SqlStore) -> None:
    """The flow list says what flow/flows.py says of the same tasks (the graph's summary), name included."""
    # A chord applied outside any task: rooted at its group id, which no task has.
    members = [run(f"m{i}", T0 + i, name="app.member", root="g", group_id="g") for i in range(2)]
    callback = run("cb", T0 + 5, name="app.callback", root="g", parent="m1", outcome="failed")
    store.apply([e for events in members for e in events] + callback + run("solo", T0 + 9, trace="tr"))
    listed = store.list_flows(TaskFilter(), 10, None).items
    assert [(f.root_id, f.root_name) for f in listed] == [("solo", "app.add"), ("g", "app.member")]
    assert [summarize_flow(f.root_id, store.flow_tasks(f.root_id)) for f in listed] == listed


def test_workers_online_offline_and_tasks_run(store: SqlStore) -> None:
    now = time.time()
    store.apply(
        [
            event("worker.online", ts=now - 5, hostname="celery@up", pid=10, info={"heartbeat_interval": 2.0},
                  tasks=[TaskInfo(name="app.a")]),
            event("worker.heartbeat", ts=now - 1, hostname="celery@up"),
            event("worker.online", ts=now - 100, hostname="celery@gone"),
            event("worker.offline", ts=now - 50, hostname="celery@gone"),
            event("worker.online", ts=now - 600, hostname="celery@silent", info={"heartbeat_interval": 2.0}),
            event("worker.heartbeat", ts=now - 500, hostname="celery@silent"),
            *run("t1", now - 3, host="celery@up"),
            *run("t2", now - 3, host="celery@up"),
        ]
    )  # fmt: skip
    # An offline event that arrives late (before the online event it follows) still wins by time.
    store.apply([event("worker.offline", ts=now - 400, hostname="celery@silent")])
    workers = {w.hostname: w for w in store.workers()}
    assert workers["celery@up"].status == "online"
    assert (workers["celery@up"].tasks_run, workers["celery@up"].pid) == (2, 10)
    assert workers["celery@up"].last_heartbeat == pytest.approx(now - 1)
    assert workers["celery@up"].registered == ["app.a"]
    assert workers["celery@gone"].status == "offline"
    assert workers["celery@silent"].status == "offline"
    store.apply([event("worker.online", ts=now, hostname="celery@gone")])
    assert {w.hostname: w.status for w in store.workers()}["celery@gone"] == "online"


def test_each_worker_is_judged_by_the_heartbeat_interval_it_announces(store: SqlStore) -> None:
    now = time.time()
    store.apply(
        [
            event("worker.online", None, now - 60, hostname="celery@slow", heartbeat_interval=60.0),
            event("worker.online", None, now - 10, hostname="celery@fast", heartbeat_interval=2.0),
            event("worker.online", None, now - 60, hostname="celery@old"),  # announces none: the default
        ]
    )
    workers = {w.hostname: (w.status, w.heartbeat_interval) for w in store.workers()}
    assert workers == {
        "celery@slow": ("online", 60.0),
        "celery@fast": ("offline", 2.0),
        "celery@old": ("offline", DEFAULT_HEARTBEAT_INTERVAL),
    }


def test_changes_since_never_skips_a_commit_of_concurrent_writers(store_url: str) -> None:
    writers = [open_store(store_url) for _ in range(2)]
    reader = open_store(store_url)
    seen: dict[str, int] = {}
    done = threading.Event()
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for b in range(30):
                writers[k].apply([event("sent", f"w{k}-{b}-{i}", T0 + i, name="app.x") for i in range(20)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        cursor = 0
        while True:
            finished = done.is_set()
            items, new = reader.changes_since(cursor, 50)
            assert new >= cursor
            for item in items:
                seen[item.task_id] = new
            cursor = new
            if finished and not items:
                return

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    tail = threading.Thread(target=read)
    tail.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    tail.join(120)
    for s in (*writers, reader):
        s.close()
    assert not errors
    assert len(seen) == 2 * 30 * 20


def test_two_writers_folding_the_same_task_see_each_others_events(store_url: str) -> None:
    """Two `consume` processes may get events of one task: each fold includes what the other stored."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        events = run("t1", T0)
        first.apply([events[0]])
        second.apply([events[1]])
        first.apply([events[3]])  # first's memory of t1 is stale now: it must read second's event
        second.apply([events[2]])
        for store in (first, second):
            task = store.get_task("t1")
            assert task is not None
            assert [e.type for e in task.events] == ["sent", "received", "started", "succeeded"]
            assert task.state == "SUCCESS"
            assert [s.kind for s in task.segments] == ["queued", "received", "running"]
        assert first.list_tasks(TaskFilter(), 5, None).items[0].durations == {
            "PENDING": 1.0, "RECEIVED": 1.0, "STARTED": 0.5,
        }  # fmt: skip
    finally:
        first.close()
        second.close()


def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """`server` and `consume` (or two `consume`s) started together on a new SQLite file: SQLite answers
    the switch to WAL with "database is locked" at once rather than waiting; every process must open."""
    script = textwrap.dedent(
        """
        import sys, threading, time
        from celery_flow.store import TaskFilter, open_store
        time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at the same moment
        store = open_store(sys.argv[1])
        errors = []
        def read():  # each thread opens its own connection, as the server's and consumer's threads do
            try:
                for _ in range(20):
                    store.list_tasks(TaskFilter(), 10, None)
            except Exception as exc:
                errors.append(exc)
        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        store.close()
        if errors:
            sys.exit(repr(errors[0]))
        """
    )
    for attempt in range(5):
        url = f"sqlite:///{tmp_path / f'race{attempt}.db'}"
        start = f"{time.time() + 1.0:.3f}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, url, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for _ in range(4)
        ]
        results = [p.communicate(timeout=120) for p in procs]
        failures = [err.decode() for p, (_, err) in zip(procs, results, strict=True) if p.returncode != 0]
        assert not failures, failures


def test_sweep_by_age_and_count_removes_tasks_events_and_empty_flows(store: SqlStore) -> None:
    now = time.time()
    for i in range(30):
        child = run(f"old{i}-c", now - 10_000 - i, name="app.old", root=f"old{i}", parent=f"old{i}")
        store.apply(run(f"old{i}", now - 10_000 - i, name="app.old") + child)
    for i in range(20):
        store.apply(run(f"new{i}", now - 100 + i, name="app.new"))
    assert store.stats().tasks == 80
    assert store.sweep(ttl=3600, max_tasks=None) == 60
    stats = store.stats()
    assert (stats.tasks, stats.events) == (20, 80)
    assert store.get_task("old1") is None
    assert store.get_task("new1") is not None
    assert {f.root_id for f in store.list_flows(TaskFilter(), 100, None).items} == {
        f"new{i}" for i in range(20)
    }
    assert {r.name: r.total for r in store.registry()} == {"app.new": 20, "app.old": 0}
    assert store.sweep(ttl=None, max_tasks=5) == 15
    remaining = store.list_tasks(TaskFilter(), 100, None).items
    assert [t.task_id for t in remaining] == [f"new{i}" for i in reversed(range(15, 20))]
    assert store.stats().tasks == 5
    assert store.sweep(ttl=3600, max_tasks=5) == 0


def test_sweep_works_in_bounded_slices(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large backlog is deleted a slice per call, so the consumer calling sweep() never stalls."""
    import celery_flow.store.retention as retention

    monkeypatch.setattr(retention, "SWEEP_BATCH", 10)
    now = time.time()
    store.apply([e for i in range(35) for e in run(f"old{i}", now - 10_000 - i)])
    assert store.sweep(ttl=0, max_tasks=None) == 0  # 0 keeps everything
    assert store.sweep(ttl=3600, max_tasks=None, budget=0) == 10
    assert store.stats().tasks == 25
    assert store.sweep(ttl=3600, max_tasks=None) == 25
    assert store.stats().tasks == 0
    assert store.list_flows(TaskFilter(), 10, None).items == []


def test_sweep_keeps_partial_flows_consistent(store: SqlStore) -> None:
    now = time.time()
    store.apply(run("root", now - 10_000, root="root") + run("kid", now - 10, root="root", parent="root"))
    assert store.sweep(ttl=3600, max_tasks=None) == 1
    flow = store.list_flows(TaskFilter(), 5, None).items[0]
    assert (flow.root_id, flow.task_count, flow.counts, flow.started_at) == (
        "root",
        1,
        {"SUCCESS": 1},
        now - 10,
    )


def test_extreme_but_valid_values_are_stored(store: SqlStore) -> None:
    """Whatever `events.decode` accepts, both engines store (a poison batch would block the stream)."""
    from celery_flow.events import decode

    raws = [
        b'{"v":1,"id":"x1","type":"sent","ts":1.0,"task_id":"t1","retries":9223372036854775807,"name":"n\\u0000"}',
        b'{"v":1,"id":"x2","type":"started","ts":2,"task_id":"t1","pid":9223372036854775807,"hostname":"w",'
        b'"eta":1e300,"runtime":-5,"args":[1e308,"\\u2603",{"k":null}]}',
        b'{"v":1,"id":"x3","type":"worker.online","ts":3,"hostname":"w","pid":-9223372036854775808,'
        b'"info":{"heartbeat_interval":1e308}}',
    ]
    assert store.apply([decode(raw) for raw in raws]) == ["t1"]
    task = store.get_task("t1")
    assert task is not None
    assert (task.retries, task.pid, task.args) == (
        9223372036854775807,
        9223372036854775807,
        [1e308, "\u2603", {"k": None}],
    )
    worker = store.workers()[0]
    assert worker.pid == -9223372036854775808
    assert worker.status == "offline"  # a silly heartbeat interval does not keep a silent worker online


def test_postgresql_reads_survive_a_dropped_connection(store_url: str) -> None:
    """A server restart drops pooled connections: the next read reconnects instead of failing once."""
    if not store_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    import psycopg

    store = open_store(store_url)
    try:
        store.apply(run("t1", T0))
        assert store.get_task("t1") is not None
        with psycopg.connect(store_url.split("?")[0], autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert store.list_tasks(TaskFilter(), 5, None).items[0].task_id == "t1"
        assert store.apply(run("t2", T0 + 1)) == ["t2"]
    finally:
        store.close()


def test_counters_are_added_in_the_apply_transaction(store: SqlStore) -> None:
    store.apply([], {"rejected.not_json": 2, "publisher.dropped": 5})
    store.apply(run("a", T0), {"rejected.not_json": 1})
    assert store.stats().counters == {"rejected.not_json": 3, "publisher.dropped": 5}
    assert store.head_cursor() >= 1
    store.ping()


def test_two_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    """A `consume`-like process writes while this (`server`-like) process reads the same file."""
    url = f"sqlite:///{tmp_path}/shared.db"
    reader = open_store(url)
    script = textwrap.dedent(
        f"""
        from celery_flow.store import open_store
        from tests.support.events import event
        s = open_store({url!r})
        for b in range(40):
            s.apply([event("sent", f"p{{b}}-{{i}}", 1.0 + b, name="app.p") for i in range(25)])
        s.close()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    try:
        cursor = 0
        seen: set[str] = set()
        while True:
            exited = proc.poll() is not None
            items, cursor = reader.changes_since(cursor, 100)
            seen |= {t.task_id for t in items}
            reader.list_tasks(TaskFilter(name="app.p"), 20, None)
            if exited and not items:
                break
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
    assert len(seen) == 1000
    assert reader.stats().tasks == 1000
    reader.close()


def test_open_store_errors_name_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="choose a writable path"):
        open_store(f"sqlite:///{blocker}/sub/flow.db")
    with pytest.raises(StoreError, match="unknown store URL"):
        open_store("mysql://x/y")
    with pytest.raises(
        StoreError, match=r"cannot connect to PostgreSQL at postgresql://u:\*\*\*@127.0.0.1:1/db"
    ):
        open_store("postgresql://u:secret@127.0.0.1:1/db")


def test_postgresql_errors_name_the_fix_for_what_failed(pg_url: str) -> None:
    """A read-only standby answers: the message must point at it, not at the URL or a stopped server."""
    read_only = f"{pg_url}?options=-cdefault_transaction_read_only%3Don"
    with pytest.raises(StoreError) as raised:
        open_store(read_only)
    message = str(raised.value)
    assert "read-only transaction" in message  # the server's own words
    assert "point --store / CELERY_FLOW_STORE at a writable primary" in message
    assert "PostgreSQL is running" not in message
