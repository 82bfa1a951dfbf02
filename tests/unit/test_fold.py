"""Folding one task's events: states, retries, out-of-order arrival, duplicates, timeline."""

from __future__ import annotations

import functools
import random

import pytest
from tests.support.events import event

from celery_flow.events import Event
from celery_flow.flow.fold import fold_task

# Every event here is one of task t1 (proj.add).
t1 = functools.partial(event, task_id="t1", name="proj.add")


def happy() -> list[Event]:
    return [
        t1("sent", ts=100.0, queue="celery", args=[1, 2], kwargs={"x": 1}, root_id="r", parent_id="p"),
        t1("received", ts=101.0, hostname="celery@w1", pid=7),
        t1("started", ts=103.0, hostname="celery@w1", pid=7),
        t1("succeeded", ts=106.0, hostname="celery@w1", pid=7, result=3, runtime=2.9),
    ]


def test_happy_path_gives_state_timestamps_and_durations() -> None:
    task = fold_task("t1", happy())
    assert task.state == "SUCCESS"
    assert (task.sent_at, task.received_at, task.started_at, task.finished_at) == (100, 101, 103, 106)
    assert task.result == 3
    assert task.runtime == 2.9
    assert task.args == [1, 2]
    assert task.kwargs == {"x": 1}
    assert task.hostname == "celery@w1"
    assert task.queue == "celery"
    assert task.root_id == "r"
    assert task.parent_id == "p"
    assert task.durations == {"PENDING": 1.0, "RECEIVED": 2.0, "STARTED": 3.0}
    assert [s.kind for s in task.segments] == ["queued", "received", "running"]
    assert task.segments[-1].end == 106.0
    assert [e.type for e in task.events] == ["sent", "received", "started", "succeeded"]


@pytest.mark.parametrize("seed", range(20))
def test_any_arrival_order_and_duplicates_give_the_same_fold(seed: int) -> None:
    events = happy()
    expected = fold_task("t1", events)
    shuffled = events + random.Random(seed).sample(events, 2)
    random.Random(seed).shuffle(shuffled)
    assert fold_task("t1", shuffled) == expected


def test_succeeded_before_started_still_ends_in_success() -> None:
    events = happy()
    partial = fold_task("t1", [events[0], events[3]])
    assert partial.state == "SUCCESS"
    assert partial.finished_at == 106.0
    assert partial.started_at is None
    complete = fold_task("t1", [events[0], events[3], events[2], events[1]])
    assert complete.state == "SUCCESS"
    assert complete.started_at == 103.0


def retry_events() -> list[Event]:
    return [
        t1("sent", ts=10.0, retries=0, root_id="t1"),
        t1("received", ts=11.0, retries=0, hostname="celery@w1"),
        t1("started", ts=12.0, retries=0, hostname="celery@w1"),
        t1("retried", ts=13.0, retries=0, hostname="celery@w1", exception="IOError('boom')"),
        # The retry is re-published from inside the task: parent_id is the task itself.
        t1("sent", ts=13.1, retries=1, parent_id="t1", root_id="t1", eta=15.0),
        t1("received", ts=13.2, retries=1, hostname="celery@w2"),
        t1("started", ts=15.0, retries=1, hostname="celery@w2"),
        t1("succeeded", ts=16.0, retries=1, hostname="celery@w2", runtime=1.0),
    ]


def test_retry_attempts_supersede_the_retried_state() -> None:
    events = retry_events()
    assert fold_task("t1", events[:4]).state == "RETRY"
    assert fold_task("t1", events[:4]).exception == "IOError('boom')"
    assert fold_task("t1", events[:5]).state == "PENDING"
    assert fold_task("t1", events[:7]).state == "STARTED"
    final = fold_task("t1", list(reversed(events)))
    assert final.state == "SUCCESS"
    assert final.retries == 1
    assert final.parent_id is None, "a retry's self-parent must not become the task's parent"
    assert final.hostname == "celery@w2"
    assert final.exception is None
    assert [s.kind for s in final.segments] == [
        "queued",
        "received",
        "running",
        "retry",
        "queued",
        "received",
        "running",
    ]
    assert final.durations["RETRY"] == pytest.approx(0.1)
    assert final.durations["STARTED"] == pytest.approx(2.0)


def test_failure_keeps_exception_and_traceback() -> None:
    task = fold_task(
        "t1",
        [
            t1("started", ts=2.0, hostname="h"),
            t1("failed", ts=3.0, exception="ValueError('x')", traceback="Traceback ...", runtime=1.0),
            t1("sent", ts=1.0),
        ],
    )
    assert task.state == "FAILURE"
    assert task.exception == "ValueError('x')"
    assert task.traceback == "Traceback ..."
    assert task.result is None


def test_revoked_while_queued() -> None:
    task = fold_task("t1", [t1("revoked", ts=5.0, reason="terminated"), t1("sent", ts=1.0)])
    assert task.state == "REVOKED"
    assert task.finished_at == 5.0
    assert task.durations == {"PENDING": 4.0}


def test_task_without_root_is_its_own_root_and_open_segment_has_no_duration() -> None:
    task = fold_task("t1", [t1("sent", ts=1.0), t1("received", ts=2.0)])
    assert task.root_id == "t1"
    assert task.state == "RECEIVED"
    assert task.segments[-1].end is None
    assert task.durations == {"PENDING": 1.0}


def test_clock_skew_never_gives_negative_durations() -> None:
    task = fold_task(
        "t1", [t1("sent", ts=10.0), t1("received", ts=9.0), t1("started", ts=9.5), t1("succeeded", ts=9.7)]
    )
    assert task.state == "SUCCESS"
    assert all(d >= 0 for d in task.durations.values())


def test_links_are_merged_without_duplicates_or_self() -> None:
    task = fold_task(
        "t1",
        [
            t1("sent", ts=1.0, links=["b", "t1"], link_errors=["err"]),
            t1("received", ts=2.0, links=["b", "c"]),
        ],
    )
    assert task.links == ["b", "c"]
    assert task.link_errors == ["err"]


def test_no_events() -> None:
    task = fold_task("t1", [])
    assert task.state == "PENDING"
    assert task.events == []


def test_an_event_record_keeps_each_field_of_its_event() -> None:
    retried = event(
        "retried", "t1", 5.0, hostname="h1", pid=42, retries=1, exception="ValueError: x",
        traceback="Traceback (most recent call last):\nValueError: x\n", reason="why", runtime=0.5,
    )  # fmt: skip
    record = fold_task("t1", [retried]).events[0]
    assert (record.id, record.type, record.ts) == (retried.id, "retried", 5.0)
    assert (record.hostname, record.pid, record.retries) == ("h1", 42, 1)
    assert (record.exception, record.traceback) == ("ValueError: x", retried.traceback)
    assert (record.reason, record.runtime) == ("why", 0.5)
    assert record.fingerprint is not None
