"""Property: however a flow's events are split into batches, ordered and duplicated, the store ends the same.

The consumer sees events late, twice and out of order (several producers and workers, redelivery after a
crash); the store must give the same tasks, flow row, registry and changes as in-order arrival.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.events import event

from celery_flow.events import Event
from celery_flow.store import TaskFilter, open_store
from celery_flow.store.sql import SqlStore

T0 = 1_700_000_000.0


def _flow() -> list[Event]:
    """A root, a chain successor retried once, and a two-member chord with a callback that failed."""
    events: list[Event] = []

    def add(type_: str, task_id: str, ts: float, **fields: Any) -> None:
        events.append(event(type_, task_id, ts, **fields))

    lineage = {"root_id": "root", "trace_id": "tr"}
    for task_id, name, parent, t in (("root", "app.a", None, 0.0), ("b", "app.b", "root", 3.0)):
        add("sent", task_id, T0 + t, name=name, parent_id=parent, args=[t], **lineage)
        add("received", task_id, T0 + t + 0.5, hostname="celery@w1")
        add("started", task_id, T0 + t + 1, hostname="celery@w1", pid=7)
    add("succeeded", "root", T0 + 2, hostname="celery@w1", runtime=1.0, result="r")
    add("retried", "b", T0 + 4.5, hostname="celery@w1", reason="boom")
    add("sent", "b", T0 + 4.6, name="app.b", parent_id="b", retries=1, **lineage)
    add("received", "b", T0 + 5, hostname="celery@w2", retries=1)
    add("started", "b", T0 + 5.5, hostname="celery@w2", retries=1)
    add("succeeded", "b", T0 + 6, hostname="celery@w2", retries=1, runtime=0.5, result={"x": 1})
    for member in ("c1", "c2"):
        add("sent", member, T0 + 6.1, name="app.c", parent_id="b", group_id="g", chord_id="cb", **lineage)
        add("started", member, T0 + 6.5, hostname="celery@w1")
        add("succeeded", member, T0 + 7, hostname="celery@w1", runtime=0.5)
    add("sent", "cb", T0 + 7.1, name="app.cb", parent_id="c2", **lineage)
    add("started", "cb", T0 + 7.5, hostname="celery@w2")
    add(
        "failed",
        "cb",
        T0 + 8,
        hostname="celery@w2",
        exception="ValueError('no')",
        traceback="tb",
        runtime=0.5,
    )
    return events


FLOW = _flow()


def _snapshot(store: SqlStore) -> Any:
    tasks = {t.task_id: asdict(t) for t in store.flow_tasks("root")}
    details = {task_id: asdict(store.get_task(task_id)) for task_id in tasks}  # type: ignore[arg-type]
    flows = [asdict(f) for f in store.list_flows(TaskFilter(), 10, None).items]
    registry = [asdict(r) for r in store.registry()]
    workers = [(w.hostname, w.tasks_run) for w in store.workers()]
    stats = store.stats()
    clusters = [asdict(c) for c in store.failures(T0 - 3600, T0 + 3600, None)]
    return tasks, details, flows, registry, workers, (stats.tasks, stats.events), clusters


def _apply_in_order() -> Any:
    store = open_store("sqlite:///:memory:")
    assert isinstance(store, SqlStore)
    store.apply(FLOW)
    try:
        return _snapshot(store)
    finally:
        store.close()


EXPECTED = _apply_in_order()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(FLOW))),
    cuts=st.lists(st.integers(min_value=1, max_value=len(FLOW) - 1), max_size=8),
    duplicates=st.lists(st.integers(min_value=0, max_value=len(FLOW) - 1), max_size=10),
)
def test_any_arrival_gives_the_same_store(order: list[int], cuts: list[int], duplicates: list[int]) -> None:
    arrival = [FLOW[i] for i in order] + [FLOW[i] for i in duplicates]
    bounds = sorted({0, *cuts, len(arrival)})
    store = open_store("sqlite:///:memory:")
    assert isinstance(store, SqlStore)
    try:
        cursor = 0
        for start, end in itertools.pairwise(bounds):
            changed = store.apply(arrival[start:end])
            items, cursor_after = store.changes_since(cursor, 1000)
            assert {t.task_id for t in items} == set(changed)
            cursor = cursor_after
        assert _snapshot(store) == EXPECTED
    finally:
        store.close()


def test_the_expected_store_is_what_a_user_expects() -> None:
    tasks, details, flows, registry, workers, counts, clusters = EXPECTED
    assert {k: v["state"] for k, v in tasks.items()} == {
        "root": "SUCCESS", "b": "SUCCESS", "c1": "SUCCESS", "c2": "SUCCESS", "cb": "FAILURE",
    }  # fmt: skip
    assert details["b"]["retries"] == 1
    assert details["b"]["parent_id"] == "root"
    assert details["root"]["children"] == ["b"]
    assert flows[0]["state"] == "FAILURE"
    assert flows[0]["counts"] == {"SUCCESS": 4, "FAILURE": 1}
    assert flows[0]["duration"] == 8.0
    assert {r["name"]: r["failure_rate"] for r in registry}["app.cb"] == 1.0
    assert dict(workers) == {"celery@w1": 3, "celery@w2": 2}
    assert counts == (5, len(FLOW))
    assert [(c["exception_type"], c["count"], c["retries"], c["sample_task_ids"]) for c in clusters] == [
        ("ValueError", 1, 0, ["cb"]),
        ("boom", 0, 1, ["b"]),
    ]
