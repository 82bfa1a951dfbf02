"""How task runs are hooked, seen from the events: a worker's own runs go through a wrapper around Celery's
tracer (no task_prerun/task_postrun dispatch per task), eager runs through the signals, and either way
every run is reported exactly once, also across a re-`init()` in a running worker."""

from __future__ import annotations

import time

import pytest
from celery import signals
from celery.contrib.testing.worker import start_worker
from tests.support.events import events_for, has
from tests.support.worker import tracked_worker

import celery_flow
from celery_flow.tracking.hooks import tracker_for_app
from celery_flow.transport import ConfigError


def _connected(signal: signals.Signal, uid: str) -> bool:
    return any(key[0] == uid for key, _ in signal.receivers)


def _run_signals_connected() -> tuple[bool, bool]:
    return (
        _connected(signals.task_prerun, "celery_flow.task_prerun"),
        _connected(signals.task_postrun, "celery_flow.task_postrun"),
    )


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_worker_runs_skip_the_run_signals_and_eager_runs_still_report(redis_url: str, pool: str) -> None:
    with tracked_worker(redis_url, redis_url, worker=False) as t:
        assert _run_signals_connected() == (True, True)  # a producer: its eager runs need them
        with start_worker(
            t.app, pool=pool, concurrency=2, perform_ping_check=False, loglevel="ERROR", shutdown_timeout=10
        ):
            # Celery's tracer dispatches a signal only when it has receivers: none of ours now.
            assert _run_signals_connected() == (False, False)
            ran = t.task("add").delay(2, 3)
            assert ran.get(timeout=20) == 5
            failed = t.task("fail").delay("no")
            with pytest.raises(ValueError):
                failed.get(timeout=20, propagate=True)
        assert _run_signals_connected() == (True, True)
        eager = t.task("add").apply(args=(4, 5))
        assert eager.get() == 9
        ends = [(ran.id, "succeeded"), (failed.id, "failed"), (eager.id, "succeeded")]
        events = t.log.wait_for(lambda ev: all(has(ev, task_id, type_) for task_id, type_ in ends))
    assert [e.type for e in events_for(events, ran.id)] == ["sent", "received", "started", "succeeded"]
    done = events_for(events, ran.id, "succeeded")[0]
    assert done.result == 5
    assert done.runtime is not None
    assert done.runtime >= 0
    assert "@" in (done.hostname or "")
    assert [e.type for e in events_for(events, failed.id)] == ["sent", "received", "started", "failed"]
    assert "ValueError" in (events_for(events, failed.id, "failed")[0].exception or "")
    # An eager run never passes a broker or a worker: it starts and ends in this process.
    assert [e.type for e in events_for(events, eager.id)] == ["started", "succeeded"]
    assert events_for(events, eager.id, "succeeded")[0].result == 9


def test_init_again_in_a_running_worker_reports_each_run_once_with_the_new_options(redis_url: str) -> None:
    with tracked_worker(redis_url, redis_url, heartbeat_interval=0.2) as t:
        before = t.task("add").delay(1, 1)
        assert before.get(timeout=20) == 2
        first = tracker_for_app(t.app)
        with pytest.raises(ConfigError):  # a bad new URL leaves the tracking that works alone
            celery_flow.init(t.app, transport_url="redis://127.0.0.1:99999/0", prefix=t.prefix)
        assert tracker_for_app(t.app) is first
        celery_flow.init(
            t.app, transport_url=redis_url, prefix=t.prefix, capture_result=False, heartbeat_interval=0.2
        )
        reinit_at = time.time()
        after = t.task("add").delay(2, 2)
        assert after.get(timeout=20) == 4
        events = t.log.wait_for(
            lambda ev: (
                has(ev, after.id, "succeeded")
                and any(e.type == "worker.heartbeat" and e.ts > reinit_at + 0.3 for e in ev)
            )
        )
    for run in (before, after):
        assert [e.type for e in events_for(events, run.id)] == ["sent", "received", "started", "succeeded"]
    assert events_for(events, before.id, "succeeded")[0].result == 2
    assert events_for(events, after.id, "succeeded")[0].result is None  # capture_result=False now
    # The new tracker knows the worker as the old one did: the same nodename on every worker-side event.
    nodename = next(e for e in events if e.type == "worker.online").hostname
    assert "@" in (nodename or "")
    worker_side = [e for run in (before, after) for e in events_for(events, run.id) if e.type != "sent"]
    assert {e.hostname for e in worker_side} == {nodename}
