"""Schedule entries and runs in the store (store/schedules.py), SQLite and PostgreSQL alike: late and
missed judged by the clock given, runs stored once, overdue runs a beat gave up on counted, an entry
beat stops announcing removed, runs deleted with their tasks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.events import event, finished_task
from tests.support.postgres import own_sql_store

from celery_flow.events import Event, ScheduleInfo, ScheduleRun
from celery_flow.store.sql import SqlStore

T = 1_800_000_000.0
BEAT = "celerybeat@host"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore[Any]]:
    yield from own_sql_store(request.param, request, tmp_path)


def announce(ts: float, next_at: float, *names: str, kind: str = "worker.heartbeat") -> Event:
    infos = [
        ScheduleInfo(name=n, task=f"t.{n}", schedule="every 10s", interval=10.0, next_at=next_at)
        for n in names
    ]
    return event(kind, hostname=BEAT, ts=ts, heartbeat_interval=5.0, info={"role": "beat"}, schedules=infos)


def sent_run(
    task_id: str, ts: float, entry: str = "sync", missed: int = 0, due: float | None = None
) -> Event:
    run = ScheduleRun(entry=entry, due=ts if due is None else due, next_at=ts + 10, missed=missed)
    return event("sent", task_id, ts, name=f"t.{entry}", root_id=task_id, schedule=run)


def only(store: SqlStore[Any], now: float, grace: float = 5.0) -> dict[str, Any]:
    body = store.schedules(grace=grace, now=now)
    assert len(body.items) == 1
    return {**vars(body.items[0]), "beat_down": body.beat_down}


def test_late_and_missed_by_the_clock(store: SqlStore[Any]) -> None:
    store.apply([announce(T, T + 10, "sync", kind="worker.online"), sent_run("r1", T + 10)])
    store.apply(finished_task("r1", T + 10.1, name="t.sync"))
    on_time = only(store, T + 24)
    assert on_time["expected_next_at"] == T + 20
    assert (on_time["late"], on_time["missed"], on_time["runs"], on_time["failures"]) == (False, 0, 1, 0)
    assert on_time["recent"][0].state == "SUCCESS"
    late = only(store, T + 26)
    assert (late["late"], late["missed"]) == (True, 0)
    # Due at T+20 (late, expected to go out late), T+30 and T+40 passed more than 5 s ago: 2 missed.
    later = only(store, T + 46)
    assert (later["late"], later["missed_now"], later["missed"]) == (True, 2, 2)
    assert later["overdue"] == pytest.approx(26)
    # With a larger grace the same moment is not late yet.
    assert only(store, T + 26, grace=60)["late"] is False


def test_a_run_is_stored_once_and_what_beat_reports_missed_is_added(store: SqlStore[Any]) -> None:
    store.apply([announce(T, T + 10, "sync", kind="worker.online")])
    late_run = sent_run("r1", T + 45, missed=2, due=T + 10)
    store.apply([late_run])
    store.apply([late_run])  # redelivered
    entry = only(store, T + 46)
    assert (entry["runs"], entry["missed"], entry["late"]) == (1, 2, False)
    assert entry["recent"][0].late is True
    assert entry["recent"][0].missed_before == 2


def test_a_beat_back_with_a_fresh_schedule_leaves_the_overdue_runs_missed(store: SqlStore[Any]) -> None:
    store.apply([announce(T, T + 10, "sync", kind="worker.online")])
    # Back at T+35 with the next run at T+45: the runs due at T+10, T+20 and T+30 never go out.
    store.apply([announce(T + 35, T + 45, "sync", kind="worker.online")])
    entry = only(store, T + 36)
    assert (entry["late"], entry["missed"]) == (False, 3)


def test_beat_down_and_entries_it_stops_announcing(store: SqlStore[Any]) -> None:
    store.apply([announce(T, T + 10, "sync", "report", kind="worker.online")])
    assert store.schedules(now=T + 1).beat_down is False
    assert store.schedules(now=T + 60).beat_down is True  # silent for 3 x 5 s
    store.apply([event("worker.offline", hostname=BEAT, ts=T + 2)])
    body = store.schedules(now=T + 3)
    assert body.beat_down is True
    assert [b.up for b in body.beats] == [False]
    store.apply([announce(T + 4, T + 10, "sync", kind="worker.online")])
    body = store.schedules(now=T + 5)
    assert [i.name for i in body.items] == ["sync"]
    assert body.beat_down is False


def test_runs_go_with_their_tasks(store: SqlStore[Any]) -> None:
    hour_ago = time.time() - 3600
    store.apply(
        [announce(hour_ago, hour_ago + 10, "sync", kind="worker.online"), sent_run("r1", hour_ago + 10)]
    )
    store.apply(finished_task("r1", hour_ago + 10.1, name="t.sync"))
    assert only(store, hour_ago + 11)["runs"] == 1
    assert store.sweep(ttl=60.0, max_tasks=None) == 1
    assert only(store, hour_ago + 11)["runs"] == 0
