"""One trace id reaches every descendant task and every event, whatever the canvas."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import chain, chord, group
from celery.result import AsyncResult
from tests.support.worker import Tracked, tracked_worker

import celery_flow
from celery_flow.events import Event

TASK_TYPES = {"sent", "received", "started", "succeeded", "failed", "retried"}


@pytest.fixture
def tracked(redis_url: str) -> Iterator[Tracked]:
    with tracked_worker(redis_url, redis_url) as t:
        yield t


def task_events(events: list[Event], root_id: str) -> list[Event]:
    return [e for e in events if e.type in TASK_TYPES and e.root_id in (root_id, None)]


def settled(*final_ids: str):  # type: ignore[no-untyped-def]
    return lambda ev: all(any(e.task_id == t and e.type == "succeeded" for e in ev) for t in final_ids)


def assert_all_traced(events: list[Event], trace_id: str, expect_at_least: int) -> None:
    traced = [e for e in events if e.type in TASK_TYPES]
    assert len(traced) >= expect_at_least
    wrong = [(e.type, e.name, e.trace_id) for e in traced if e.trace_id != trace_id]
    assert not wrong, wrong


def test_context_manager_generates_and_returns_an_id() -> None:
    with celery_flow.trace() as trace_id:
        assert len(trace_id) == 32
        assert celery_flow.current_trace_id() == trace_id
        with celery_flow.trace("inner") as inner:
            assert inner == "inner"
            assert celery_flow.current_trace_id() == "inner"
        assert celery_flow.current_trace_id() == trace_id
    assert celery_flow.current_trace_id() is None


def test_decorator_gives_each_call_a_scope() -> None:
    seen: list[str | None] = []

    @celery_flow.trace()
    def handler() -> None:
        seen.append(celery_flow.current_trace_id())

    handler()
    handler()
    assert seen[0]
    assert seen[1]
    assert seen[0] != seen[1]
    assert celery_flow.current_trace_id() is None

    @celery_flow.trace("fixed")
    def fixed() -> str | None:
        return celery_flow.current_trace_id()

    assert fixed() == "fixed"

    with pytest.raises(TypeError, match=r"@celery_flow.trace\(\)"):
        celery_flow.trace(fixed)  # type: ignore[arg-type]


def test_every_shape_carries_the_trace_id(tracked: Tracked) -> None:
    add, mul, xsum = tracked.task("add"), tracked.task("mul"), tracked.task("xsum")
    with celery_flow.trace("trace-canvas") as trace_id:
        r_chain = chain(
            add.s(1, 2), group(add.s(1), mul.s(2)), chord([add.si(1, 1), add.si(2, 2)], xsum.s())
        )()
        r_group = group(add.s(i, i) for i in range(3))()
        r_chord = chord([chain(add.s(1, 1), mul.s(2)), add.s(2, 2)], xsum.s())()
        r_spawn = tracked.task("spawn").delay(2)
        r_retry = tracked.task("flaky").delay(succeed_on=1, countdown=0.1)
        r_replace = tracked.task("replaced").delay(5)
    assert celery_flow.current_trace_id() is None
    assert r_chain.get(timeout=15) == 6
    r_group.get(timeout=10)
    assert r_chord.get(timeout=10) == 8
    children = r_spawn.get(timeout=10)
    assert r_retry.get(timeout=10) == 1
    assert r_replace.get(timeout=10) == 105
    finals = [r_chain.id, *(c.id for c in r_group.results), r_chord.id, *children, r_retry.id, r_replace.id]
    events = tracked.log.wait_for(settled(*finals))
    # chain (a, b1, b2, c1, c2, d) + group (3) + chord (5) + spawn (1 + 2) + retried task + replaced: all
    # sent/received/started/succeeded (and retried) events carry it.
    assert_all_traced(events, trace_id, expect_at_least=4 * 19)


def test_current_trace_id_inside_tasks_and_nested_delay(tracked: Tracked) -> None:
    with celery_flow.trace() as trace_id:
        direct = tracked.task("trace_id").delay()
        spawner = tracked.task("spawn_traced").delay()
    assert direct.get(timeout=10) == trace_id
    grandchild_id = spawner.get(timeout=10)
    assert AsyncResult(grandchild_id, app=tracked.app).get(timeout=10) == trace_id
    events = tracked.log.wait_for(settled(direct.id, spawner.id, grandchild_id))
    assert_all_traced(events, trace_id, expect_at_least=12)


def test_no_trace_means_no_header(tracked: Tracked) -> None:
    r = tracked.task("trace_id").delay()
    assert r.get(timeout=10) is None
    events = tracked.log.wait_for(settled(r.id))
    assert all(e.trace_id is None for e in events if e.task_id == r.id)


def test_opentelemetry_span_supplies_the_trace_id(tracked: Tracked) -> None:
    otel = pytest.importorskip("opentelemetry.trace")
    context = otel.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=otel.TraceFlags(1),
    )
    with otel.use_span(otel.NonRecordingSpan(context)):
        assert celery_flow.current_trace_id() == "0af7651916cd43dd8448eb211c80319c"
        r = tracked.task("trace_id").delay()
        with celery_flow.trace("explicit"):  # an explicit id wins over the span
            r2 = tracked.task("trace_id").delay()
    assert r.get(timeout=10) == "0af7651916cd43dd8448eb211c80319c"
    assert r2.get(timeout=10) == "explicit"
