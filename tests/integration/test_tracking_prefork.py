"""A real `celery worker --pool prefork` subprocess: events from forked children, the main process
(received/revoked) and the worker lifecycle, with the nodename on every worker-side event."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
from celery import chord, group
from tests.support.canvas_app import make_app
from tests.support.events import EventLog
from tests.support.server_helpers import REPO
from tests.support.worker import prefork_worker

import celery_flow
from celery_flow.events import Event

pytestmark = pytest.mark.slow


@pytest.fixture
def prefork(
    redis_url: str, transport_url: str, unique_prefix: str
) -> Iterator[tuple[subprocess.Popen[bytes], EventLog]]:
    log = EventLog(transport_url, unique_prefix)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CFT_BROKER_URL": redis_url,
        "CFT_BACKEND_URL": redis_url,
        "CFT_FLOW_URL": transport_url,
        "CFT_FLOW_PREFIX": unique_prefix,
        "CFT_QUEUE": f"q_{unique_prefix}",
        "CELERY_FLOW_HEARTBEAT_INTERVAL": "0.5",
    }
    try:
        with prefork_worker(
            "tests.support.canvas_app",
            f"pf-{unique_prefix}@%h",
            env,
            REPO,
            "--without-mingle",
            "--without-gossip",
        ) as proc:
            log.wait_for(lambda ev: any(e.type == "worker.online" for e in ev), timeout=30)
            yield proc, log
    finally:
        log.close()


def of(events: list[Event], task_id: str, type_: str) -> Event:
    return next(e for e in events if e.task_id == task_id and e.type == type_)


def test_prefork_worker_end_to_end(
    prefork: tuple[subprocess.Popen[bytes], EventLog], redis_url: str, transport_url: str, unique_prefix: str
) -> None:
    proc, log = prefork
    app = make_app(redis_url, redis_url, transport_url, unique_prefix, queue=f"q_{unique_prefix}")
    try:
        add, xsum, slow = app.tasks["t.add"], app.tasks["t.xsum"], app.tasks["t.slow"]
        with celery_flow.trace("prefork-trace"):
            r_chord = chord([add.s(i, i) for i in range(4)], xsum.s()).apply_async()
            r_group = group(add.s(1, i) for i in range(4)).apply_async()
            r_fail = app.tasks["t.fail"].delay("password=hunter2")
            r_shadow = add.apply_async((5, 5), shadow="add, shadowed")
        assert r_chord.get(timeout=20) == 12
        assert r_shadow.get(timeout=20) == 10
        assert r_group.get(timeout=20) == [1, 2, 3, 4]
        with pytest.raises(ValueError):
            r_fail.get(timeout=20)
        member_ids = [c.id for c in r_chord.parent.results]
        finals = [r_chord.id, *member_ids, *(c.id for c in r_group.results), r_shadow.id]
        events = log.wait_for(
            lambda ev: (
                all(any(e.task_id == t and e.type == "succeeded" for e in ev) for t in finals)
                and any(e.task_id == r_fail.id and e.type == "failed" for e in ev)
            )
        )
        online = next(e for e in events if e.type == "worker.online")
        nodename = online.hostname
        assert nodename == f"pf-{unique_prefix}@{os.uname().nodename}"
        assert online.pid == proc.pid
        assert online.info
        assert online.info.get("pool") == "prefork"
        for task_id in finals:
            received, started, ok = (of(events, task_id, t) for t in ("received", "started", "succeeded"))
            assert received.pid == proc.pid  # the main process receives
            assert started.pid != proc.pid  # a forked child runs it
            assert {received.hostname, started.hostname, ok.hostname} == {nodename}
            assert {received.trace_id, started.trace_id, ok.trace_id} == {"prefork-trace"}
            # Each step exactly once: the child's tracer wrapper replaces the run signals, never adds to them.
            steps = sorted(e.type for e in events if e.task_id == task_id)
            assert steps == ["received", "sent", "started", "succeeded"]
        for m in member_ids:
            assert of(events, m, "sent").chord_id == r_chord.id
            assert of(events, m, "started").chord_id == r_chord.id  # read in the child
        assert {e.name for e in events if e.task_id == r_shadow.id} == {"add, shadowed"}
        assert of(events, r_chord.id, "sent").trace_id == "prefork-trace"  # published by a child
        failed = of(events, r_fail.id, "failed")
        assert failed.exception == "ValueError: password=[Filtered]"

        # terminate a running task: revoked(terminated) from the main process
        running = slow.delay(30)
        log.wait_for(lambda ev: any(e.task_id == running.id and e.type == "started" for e in ev))
        app.control.revoke(running.id, terminate=True, signal="SIGKILL")
        events = log.wait_for(lambda ev: any(e.task_id == running.id and e.type == "revoked" for e in ev))
        assert of(events, running.id, "revoked").reason == "terminated"
        assert not any(e.task_id == running.id and e.type == "succeeded" for e in events)

        # warm shutdown: the worker says goodbye
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        events = log.wait_for(lambda ev: any(e.type == "worker.offline" for e in ev))
        assert any(e.type == "worker.heartbeat" and e.hostname == nodename for e in events)
        assert of_type(events, "worker.offline").hostname == nodename
    finally:
        celery_flow.shutdown(app)


def of_type(events: list[Event], type_: str) -> Event:
    return next(e for e in events if e.type == type_)
