"""queue_wait, the one thing schema 3 derives anew: how long a task waited for a worker once it could run."""

from __future__ import annotations

import itertools
from typing import Any

from tests.support.events import event

from celery_flow.events import Event
from celery_flow.flow.fold import fold_task

_ids = itertools.count()


def ev(type_: str, ts: float, **fields: Any) -> Event:
    return event(type_, "t", ts, id=f"e{next(_ids)}", name="app.x", **fields)


def test_the_wait_runs_from_sent_to_started() -> None:
    task = fold_task(
        "t", [ev("sent", 100.0), ev("received", 100.5), ev("started", 103.0), ev("succeeded", 104.0)]
    )
    assert task.queue_wait == 3.0


def test_without_a_sent_event_the_wait_runs_from_received() -> None:
    assert fold_task("t", [ev("received", 100.5), ev("started", 101.0)]).queue_wait == 0.5


def test_an_eta_or_countdown_is_not_waiting() -> None:
    events = [ev("sent", 100.0, eta=110.0), ev("received", 100.1, eta=110.0), ev("started", 110.25)]
    assert fold_task("t", events).queue_wait == 0.25
    late_eta_in_the_past = [ev("sent", 100.0, eta=90.0), ev("started", 101.0)]
    assert fold_task("t", late_eta_in_the_past).queue_wait == 1.0


def test_a_retried_task_counts_its_first_attempt_only() -> None:
    events = [
        ev("sent", 100.0), ev("started", 102.0), ev("retried", 103.0),
        ev("sent", 103.0, retries=1, eta=113.0), ev("started", 120.0, retries=1),
        ev("succeeded", 121.0, retries=1),
    ]  # fmt: skip
    assert fold_task("t", events).queue_wait == 2.0


def test_no_wait_before_the_task_started_or_without_a_queued_time() -> None:
    assert fold_task("t", [ev("sent", 100.0), ev("received", 101.0)]).queue_wait is None
    assert fold_task("t", [ev("started", 100.0), ev("succeeded", 101.0)]).queue_wait is None


def test_worker_clock_behind_the_producer_gives_no_negative_wait() -> None:
    assert fold_task("t", [ev("sent", 100.0), ev("started", 99.5)]).queue_wait == 0.0
