"""How one stored task becomes one OpenTelemetry span (pure: no exporter, no network)."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind, StatusCode

from celery_flow.export.spans import span_id_for, task_span, trace_id_for
from celery_flow.flow.model import EventRecord, TaskDetail


def _task(**fields: object) -> TaskDetail:
    base: dict[str, object] = {"task_id": str(uuid.uuid4()), "name": "app.t", "state": "SUCCESS"}
    base.update(fields)
    return TaskDetail(**base)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=80))
def test_span_ids_are_stable_nonzero_64_bit(task_id: str) -> None:
    assert span_id_for(task_id) == span_id_for(task_id)
    assert 0 < span_id_for(task_id) < 2**64


def test_trace_id_choice() -> None:
    w3c = "4bf92f3577b34da6a3ce929d0e0e4736"
    root = str(uuid.uuid4())
    assert trace_id_for(_task(trace_id=w3c, root_id=root)) == int(w3c, 16)
    # Upper-case hex is normalised; the all-zero id is invalid in W3C and is hashed instead.
    assert trace_id_for(_task(trace_id=w3c.upper(), root_id=root)) == int(w3c, 16)
    assert trace_id_for(_task(trace_id="0" * 32, root_id=root)) != 0
    # Any other trace id: hashed, identical for every task carrying it, whatever their roots.
    a, b = _task(trace_id="req-1", root_id=root), _task(trace_id="req-1", root_id=str(uuid.uuid4()))
    assert trace_id_for(a) == trace_id_for(b) != trace_id_for(_task(trace_id="req-2", root_id=root))
    # No trace id: the root task id (a uuid) is the trace id; a non-uuid root is hashed.
    assert trace_id_for(_task(root_id=root)) == uuid.UUID(root).int
    assert 0 < trace_id_for(_task(root_id="not-a-uuid")) < 2**128


def test_times_fall_back_to_received_then_sent_and_never_run_backwards() -> None:
    span = task_span(_task(received_at=10.0, sent_at=9.0, finished_at=12.5))
    assert (span.start_time, span.end_time) == (10_000_000_000, 12_500_000_000)
    span = task_span(_task(state="REVOKED", sent_at=9.0, finished_at=9.5))
    assert (span.start_time, span.end_time) == (9_000_000_000, 9_500_000_000)
    # Clock skew between hosts: a start after the end is clamped.
    span = task_span(_task(started_at=20.0, finished_at=19.0))
    assert span.start_time == span.end_time == 19_000_000_000


def test_parent_is_the_parent_task_never_the_task_itself() -> None:
    parent = str(uuid.uuid4())
    span = task_span(_task(parent_id=parent))
    assert span.parent is not None
    assert span.parent.span_id == span_id_for(parent)
    assert span.parent.trace_id == span.context.trace_id
    task = _task()
    task.parent_id = task.task_id
    assert task_span(task).parent is None


@pytest.mark.parametrize(
    ("exception", "expected"),
    [
        ("ValueError: boom", ("ValueError", "boom")),
        ("ValueError", ("ValueError", "")),
        (
            "myapp.errors.PaymentDeclined: card 4242: insufficient funds",
            ("myapp.errors.PaymentDeclined", "card 4242: insufficient funds"),
        ),
        ("KeyError('sku')", ("KeyError", "sku")),
        ("?? weird", ("Exception", "?? weird")),
    ],
)
def test_failure_status_and_exception_event(exception: str, expected: tuple[str, str]) -> None:
    span = task_span(_task(state="FAILURE", exception=exception, traceback="Traceback ...", finished_at=5.0))
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == exception
    event = next(e for e in span.events if e.name == "exception")
    assert (event.attributes["exception.type"], event.attributes["exception.message"]) == expected
    assert event.attributes["exception.stacktrace"] == "Traceback ..."


def test_revoked_is_not_an_error_but_says_why() -> None:
    task = _task(state="REVOKED", sent_at=1.0, finished_at=2.0)
    task.events = [
        EventRecord(id="e1", type="sent", ts=1.0),
        EventRecord(id="e2", type="revoked", ts=2.0, reason="terminated"),
    ]
    span = task_span(task)
    assert span.status.status_code is StatusCode.UNSET
    (revoked,) = [e for e in span.events if e.name == "celery.revoked"]
    assert revoked.attributes["celery.reason"] == "terminated"


def test_attributes_skip_unknown_values_and_cap_huge_strings() -> None:
    span = task_span(_task(queue=None, hostname="celery@w1", trace_id="t" * 10_000))
    assert span.kind is SpanKind.CONSUMER
    assert "messaging.destination.name" not in span.attributes
    assert span.attributes["messaging.client.id"] == "celery@w1"
    assert len(span.attributes["celery_flow.trace_id"]) <= 4097
