"""LOST and stuck by the store's rules (store/lost.py, store/stuck.py), whatever order events arrive in.

A task RECEIVED or STARTED on a worker that went away (worker.offline, or 3 x its heartbeat interval of
silence) at or after its latest event is LOST, with the worker and when it was last heard; a later real
event (a redelivery run elsewhere) wins, a late event from the dead worker does not revive it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from tests.support.events import event, finished_task

from celery_flow.events import Event
from celery_flow.store import TaskFilter, open_store
from celery_flow.store.backfill import run
from celery_flow.store.migrations import schedule_refold
from celery_flow.store.sql import SqlStore

T0 = 1_700_000_000.0
H = "celery@dead"
H2 = "celery@other"


@contextmanager
def memory_store(stuck_after: float | None = None) -> Iterator[SqlStore]:
    store = open_store("sqlite:///:memory:", stuck_after=stuck_after)
    assert isinstance(store, SqlStore)
    try:
        yield store
    finally:
        store.close()


def task_events(task_id: str, host: str, t: float, *types: str, **fields: object) -> list[Event]:
    return [
        event(type_, task_id, t + i * 0.1, name="app.work", root_id="root", hostname=host, **fields)
        for i, type_ in enumerate(types)
    ]


def flow_counts(store: SqlStore) -> dict[str, int]:
    return store.list_flows(TaskFilter(root_id="root"), 10, None).items[0].counts


def name_counts(store: SqlStore) -> dict[str, int]:
    return next(r.counts for r in store.registry() if r.name == "app.work")


def each_order(events: Sequence[Event]) -> Iterator[list[Event]]:
    """Every arrival order of `events`, one event per batch."""
    yield from (list(p) for p in itertools.permutations(events))


def test_a_task_on_a_worker_that_went_offline_is_lost_in_every_arrival_order() -> None:
    events = [
        event("worker.online", None, T0 - 1, hostname=H, heartbeat_interval=1.0),
        *task_events("t1", H, T0, "received", "started"),
        event("worker.offline", None, T0 + 2, hostname=H),
    ]
    for order in each_order(events):
        with memory_store() as store:
            for e in order:
                store.apply([e])
            task = store.get_task("t1")
            assert task is not None
            assert task.state == "LOST", [e.type for e in order]
            assert task.reason == f"worker {H} went offline at 2023-11-14 22:13:22 UTC"
            assert task.finished_at == T0 + 2
            [row] = store.list_tasks(TaskFilter(), 10, None).items
            assert (row.state, row.reason) == ("LOST", task.reason)
            assert flow_counts(store) == {"LOST": 1}
            assert store.list_flows(TaskFilter(), 10, None).items[0].state == "LOST"
            assert name_counts(store) == {"LOST": 1}
            assert next(w for w in store.workers() if w.hostname == H).tasks_run == 1


def test_a_lost_task_reaches_the_live_feed() -> None:
    with memory_store() as store:
        store.apply(task_events("t1", H, T0, "received"))
        cursor = store.head_cursor()
        changed = store.apply([event("worker.offline", None, T0 + 1, hostname=H)])
        assert changed == ["t1"]
        tasks, _ = store.changes_since(cursor)
        assert [(t.task_id, t.state) for t in tasks] == [("t1", "LOST")]


def test_a_late_event_from_the_dead_worker_leaves_the_task_lost() -> None:
    with memory_store() as store:
        store.apply(task_events("t1", H, T0, "received"))
        store.apply([event("worker.offline", None, T0 + 2, hostname=H)])
        # The `started` it sent before dying arrives last.
        store.apply(task_events("t1", H, T0 + 1, "started"))
        task = store.get_task("t1")
        assert task is not None
        assert task.state == "LOST"
        assert flow_counts(store) == {"LOST": 1}


def test_a_redelivery_run_elsewhere_wins_in_every_arrival_order() -> None:
    events = [
        *task_events("t1", H, T0, "received", "started"),
        event("worker.offline", None, T0 + 2, hostname=H),
        *task_events("t1", H2, T0 + 3, "received", "started", "succeeded"),
    ]
    for order in each_order(events[:3] + events[-1:]):  # 24 orders; the middle events follow
        with memory_store() as store:
            for e in order:
                store.apply([e])
            store.apply(events[3:5])
            task = store.get_task("t1")
            assert task is not None
            assert (task.state, task.hostname, task.reason) == ("SUCCESS", H2, None)
            assert flow_counts(store) == {"SUCCESS": 1}
            assert name_counts(store) == {"SUCCESS": 1}


def test_a_worker_back_online_keeps_its_new_tasks() -> None:
    with memory_store() as store:
        store.apply([event("worker.offline", None, T0, hostname=H)])
        store.apply([event("worker.online", None, T0 + 1, hostname=H, heartbeat_interval=1.0)])
        store.apply(task_events("t1", H, T0 + 2, "received", "started"))
        task = store.get_task("t1")
        assert task is not None
        assert task.state == "STARTED"


def test_a_silent_worker_loses_its_tasks_after_three_intervals() -> None:
    now = time.time()
    with memory_store() as store:
        store.apply([event("worker.online", None, now - 10, hostname=H, heartbeat_interval=1.0)])
        store.apply([event("worker.online", None, now, hostname=H2, heartbeat_interval=2.0)])
        store.apply(task_events("t1", H, now - 9.5, "started"))
        store.apply(task_events("t2", H2, now, "started"))
        changed, next_in = store.check_lost()
        assert changed == ["t1"]
        assert next_in == 1.0  # half the smallest interval of the workers still here
        task = store.get_task("t1")
        assert task is not None
        assert task.state == "LOST"
        assert task.reason is not None
        assert task.reason.startswith(f"no heartbeat from worker {H} since ")
        assert task.reason.endswith(": 3 x its 1 s interval passed")
        assert task.finished_at == pytest.approx(now - 10 + 3)
        # Idempotent: a second check (another server on the same store) finds nothing left.
        assert store.check_lost().changed == []
        # A late `received` from the silent worker re-folds the task: still LOST.
        store.apply(task_events("t1", H, now - 9.6, "received"))
        task = store.get_task("t1")
        assert task is not None
        assert task.state == "LOST"
        assert {w.hostname: w.status for w in store.workers()} == {H: "offline", H2: "online"}
        # Back: what it runs from now on is not lost, and it counts as online again.
        store.apply([event("worker.heartbeat", None, time.time(), hostname=H, heartbeat_interval=1.0)])
        store.apply(task_events("t3", H, time.time(), "started"))
        assert store.check_lost().changed == []
        t3 = store.get_task("t3")
        assert t3 is not None
        assert t3.state == "STARTED"
        assert {w.hostname: w.status for w in store.workers()} == {H: "online", H2: "online"}
        assert flow_counts(store) == {"LOST": 1, "STARTED": 2}


def test_a_task_lost_after_retries_keeps_them_in_its_failure_cluster() -> None:
    now = time.time()
    traceback = (
        'Traceback (most recent call last):\n  File "/srv/app/tasks.py", line 9, in charge\n'
        "    raise ValueError(card)\nValueError: card 4242 declined\n"
    )
    with memory_store() as store:
        store.apply([event("worker.online", None, now - 10, hostname=H, heartbeat_interval=1.0)])
        store.apply(
            [
                *task_events("t1", H, now - 9.8, "started"),
                *[
                    event("retried", "t1", now - 9.5 + i, name="app.work", root_id="root", hostname=H,
                          retries=i, exception="ValueError: card 4242 declined", traceback=traceback)
                    for i in range(2)
                ],
                *task_events("t1", H, now - 7.0, "started", retries=2),
            ]
        )  # fmt: skip
        assert [c.retries for c in store.failures(None, None, None)] == [2]
        assert store.check_lost().changed == ["t1"]
        assert store.get_task("t1").state == "LOST"  # type: ignore[union-attr]
        assert [c.retries for c in store.failures(None, None, None)] == [2]


def test_a_sub_second_heartbeat_late_on_a_busy_machine_loses_nothing() -> None:
    now = time.time()
    with memory_store() as store:
        store.apply([event("worker.online", None, now - 1.5, hostname=H, heartbeat_interval=0.2)])
        store.apply(task_events("t1", H, now - 1.4, "started"))
        assert store.check_lost().changed == []  # 7 intervals, but under MIN_SILENCE
        store.apply([event("worker.heartbeat", None, now - 3.0, hostname=H2, heartbeat_interval=0.2)])
        store.apply(task_events("t2", H2, now - 2.9, "started"))
        assert store.check_lost().changed == ["t2"]


def test_a_finished_task_is_never_lost() -> None:
    with memory_store() as store:
        store.apply(task_events("t1", H, T0, "received", "started", "succeeded"))
        store.apply([event("worker.offline", None, T0 + 2, hostname=H)])
        task = store.get_task("t1")
        assert task is not None
        assert task.state == "SUCCESS"


def _history(store: SqlStore, runs: int) -> None:
    """`runs` finished runs of app.work taking 10 ms each."""
    for i in range(runs):
        events = finished_task(f"h{i}", T0 + i, name="app.work")
        events[-1] = event(
            "succeeded", f"h{i}", T0 + i + 0.01, name="app.work", root_id=f"h{i}", runtime=0.01
        )
        store.apply(events)


def test_a_task_running_far_past_its_names_history_is_stuck() -> None:
    now = time.time()
    with memory_store() as store:
        _history(store, 20)
        store.apply(task_events("long", H, now - 5, "started"))
        store.apply(task_events("fresh", H, now, "started"))
        store.apply([event("worker.online", None, now, hostname=H)])
        page = store.list_tasks(TaskFilter(), 50, None)
        assert {t.task_id for t in page.items if t.stuck} == {"long"}
        assert [t.task_id for t in store.list_tasks(TaskFilter(stuck=True), 50, None).items] == ["long"]
        detail = store.get_task("long")
        assert detail is not None
        assert detail.stuck
        assert [t.stuck for t in store.flow_tasks("root") if t.task_id == "long"] == [True]


def test_fewer_than_twenty_runs_say_nothing_but_stuck_after_does() -> None:
    now = time.time()
    with memory_store() as store:
        _history(store, 19)
        store.apply(task_events("long", H, now - 5, "started"))
        assert store.list_tasks(TaskFilter(stuck=True), 50, None).items == []
    with memory_store(stuck_after=4.0) as store:
        _history(store, 19)
        store.apply(task_events("long", H, now - 5, "started"))
        store.apply(task_events("fresh", H, now - 3, "started"))
        store.apply(task_events("done", H, now - 6, "started", "succeeded"))
        assert [t.task_id for t in store.list_tasks(TaskFilter(stuck=True), 50, None).items] == ["long"]
        flags = {t.task_id: t.stuck for t in store.list_tasks(TaskFilter(), 50, None).items}
        assert (flags["long"], flags["fresh"], flags["done"]) == (True, False, False)


def test_the_stuck_filter_pages_by_keyset() -> None:
    now = time.time()
    with memory_store(stuck_after=1.0) as store:
        for i in range(5):
            store.apply(task_events(f"s{i}", H, now - 10 - i, "started"))
        first = store.list_tasks(TaskFilter(stuck=True), 2, None)
        assert [t.task_id for t in first.items] == ["s0", "s1"]
        second = store.list_tasks(TaskFilter(stuck=True), 2, first.next_cursor)
        assert [t.task_id for t in second.items] == ["s2", "s3"]


def test_a_refold_after_a_migration_keeps_lost_tasks_lost() -> None:
    now = time.time()
    with memory_store() as store:
        store.apply([event("worker.online", None, now - 10, hostname=H2, heartbeat_interval=1.0)])
        store.apply(task_events("silent", H2, now - 9.5, "started"))
        store.apply(task_events("offline", H, T0, "received"))
        store.apply([event("worker.offline", None, T0 + 1, hostname=H)])
        assert store.check_lost().changed == ["silent"]
        before = (
            store.list_tasks(TaskFilter(), 50, None),
            store.list_flows(TaskFilter(), 50, None),
            store.registry(),
            store.workers(),
        )
        store._writing(lambda s, _seq: schedule_refold(s))
        run(store)
        after = (
            store.list_tasks(TaskFilter(), 50, None),
            store.list_flows(TaskFilter(), 50, None),
            store.registry(),
            store.workers(),
        )
        assert after == before
        assert {t.task_id: t.state for t in after[0].items} == {"silent": "LOST", "offline": "LOST"}


def test_a_refold_finds_the_lost_tasks_an_older_version_left_running() -> None:
    with memory_store() as store:
        store.apply(task_events("t1", H, T0, "received", "started"))
        store.apply([event("worker.offline", None, T0 + 1, hostname=H)])
        lost = store.list_tasks(TaskFilter(), 50, None), store.list_flows(TaskFilter(), 50, None)

        def older_fold(s: Any, _seq: int) -> None:  # what a version without LOST stored
            s.run("UPDATE tasks SET state = 'STARTED', finished_at = NULL, extra = '{}'")
            s.run("UPDATE flows SET n_lost = 0, n_started = 1, state = 'RUNNING'")
            s.run("UPDATE name_stats SET n_lost = 0, n_started = 1")
            s.run("UPDATE workers SET tasks_run = 0")
            schedule_refold(s)

        store._writing(older_fold)
        assert store.list_tasks(TaskFilter(), 50, None).items[0].state == "STARTED"
        run(store)
        assert (store.list_tasks(TaskFilter(), 50, None), store.list_flows(TaskFilter(), 50, None)) == lost
        assert name_counts(store) == {"LOST": 1}
