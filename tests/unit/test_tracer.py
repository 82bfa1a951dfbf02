"""The wrapper around Celery's own per-task tracer: what each outcome of a run reports, including the two a
signal never carries (an error before the task had a request, a redelivery skipped as already done)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.app.trace import build_tracer

import celery_flow
from celery_flow.events import Event, decode
from celery_flow.tracking.hooks import Tracker
from celery_flow.tracking.tracer import trace_through, untrace
from celery_flow.transport.memory import MemoryTransport


@pytest.fixture
def tracked() -> Iterator[tuple[Celery, Tracker, MemoryTransport]]:
    url = f"memory://{uuid.uuid4().hex}"
    app = Celery("tracer_test", broker="memory://", set_as_current=False)

    @app.task(name="t.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    app.finalize()
    for name, task in app.tasks.items():  # what a worker's consumer does before it consumes
        task.__trace__ = build_tracer(name, task, app=app)
    tracker = celery_flow.init(app, transport_url=url, prefix="p")
    trace_through(app)
    try:
        yield app, tracker, MemoryTransport(url, prefix="p")
    finally:
        untrace(app)
        celery_flow.shutdown(app)


def events(tracker: Tracker, transport: MemoryTransport) -> list[Event]:
    assert tracker.publisher.flush(5)
    return [decode(e) for e in transport.entries()]


def run(app: Celery, args: object, kwargs: object) -> tuple[str, object]:
    task_id = uuid.uuid4().hex
    request = {"id": task_id, "task": "t.add", "root_id": task_id, "retries": 0, "delivery_info": {}}
    return task_id, app.tasks["t.add"].__trace__(task_id, args, kwargs, request)


def test_a_run_reports_started_then_succeeded_with_its_result(
    tracked: tuple[Celery, Tracker, MemoryTransport],
) -> None:
    app, tracker, transport = tracked
    trace_through(app)  # wrapping twice (a consumer restart) still reports once
    task_id, traced = run(app, (2, 3), {})
    assert traced[0] == 5
    got = events(tracker, transport)
    assert [(e.type, e.task_id, e.name) for e in got] == [
        ("started", task_id, "t.add"),
        ("succeeded", task_id, "t.add"),
    ]
    assert got[1].result == 5
    assert not tracker._running  # nothing kept once the run is over


def test_an_error_before_the_task_had_a_request_is_reported_failed(
    tracked: tuple[Celery, Tracker, MemoryTransport],
) -> None:
    app, tracker, transport = tracked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Celery warns "Exception raised outside body"
        task_id, _ = run(app, (2, 3), ["not", "a", "mapping"])
    got = events(tracker, transport)
    assert [(e.type, e.task_id) for e in got] == [("started", task_id), ("failed", task_id)]
    assert "InvalidTaskError" in (got[1].exception or "")
    assert "mapping" in (got[1].exception or "")
    assert not tracker._running


def test_after_untrace_and_shutdown_runs_are_celerys_own(
    tracked: tuple[Celery, Tracker, MemoryTransport],
) -> None:
    app, tracker, transport = tracked
    untrace(app)
    assert not hasattr(app.tasks["t.add"].__trace__, "celery_flow_app")
    trace_through(app)
    celery_flow.shutdown(app)
    _, traced = run(app, (1, 1), {})  # the wrapper stays, with no tracker: the task just runs
    assert traced[0] == 2
    assert tracker.publisher.flush(0)  # nothing waits to be sent: not even recorded into the stopped tracker
    assert not tracker._running
    assert events(tracker, transport) == []
