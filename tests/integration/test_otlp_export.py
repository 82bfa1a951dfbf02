"""OTLP export against a real OTLP/HTTP receiver (protobuf decoded with opentelemetry-proto).

The first tests feed tasks folded from real event sequences; the last one runs the whole path: a real
Celery worker runs a chord, the real consumer folds the events into a real store, and the exporter sink
sends the spans the receiver checks.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from tests.otlp_receiver import ReceivedSpan, otlp_receiver

from celery_flow.events import Event, make_event
from celery_flow.export import resolve_otlp_endpoint
from celery_flow.export.otlp import OtlpExporter, span_id_for
from celery_flow.flow.fold import fold_task
from celery_flow.flow.model import TaskDetail
from celery_flow.transport.base import ConfigError

STATUS_OK, STATUS_ERROR = 1, 2
SPAN_KIND_CONSUMER = 5


class DictStore:
    """The one Store method the exporter reads, over tasks folded from events (store-independent tests)."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskDetail] = {}
        self.reads = 0

    def add(self, task_id: str, events: list[Event]) -> None:
        self.tasks[task_id] = fold_task(task_id, events)

    def get_task(self, task_id: str) -> TaskDetail | None:
        self.reads += 1
        return self.tasks.get(task_id)


def _ev(type_: str, task_id: str, ts: float, **fields: Any) -> Event:
    event = make_event(type_, task_id=task_id, **fields)  # type: ignore[arg-type]
    event.ts = ts
    return event


def _lifecycle(
    task_id: str,
    name: str,
    t0: float,
    root_id: str,
    parent_id: str | None = None,
    outcome: str = "succeeded",
    **lineage: Any,
) -> list[Event]:
    common = {"name": name, "root_id": root_id, "parent_id": parent_id, **lineage}
    worker = {"hostname": "celery@box", "pid": 42}
    events = [
        _ev("sent", task_id, t0, queue="celery", retries=0, **common),
        _ev("received", task_id, t0 + 0.1, retries=0, **common, **worker),
        _ev("started", task_id, t0 + 0.2, retries=0, **common, **worker),
    ]
    if outcome == "succeeded":
        events.append(_ev("succeeded", task_id, t0 + 1.2, retries=0, runtime=1.0, **common, **worker))
    else:
        events.append(
            _ev(
                "failed",
                task_id,
                t0 + 1.2,
                retries=0,
                exception="ValueError: boom",
                traceback="Traceback (most recent call last):\n  ...\nValueError: boom",
                **common,
                **worker,
            )
        )
    return events


def _ids() -> dict[str, str]:
    return {key: str(uuid.uuid4()) for key in ("root", "h1", "h2", "cb")}


def _chord_store(trace_id: str | None) -> tuple[DictStore, dict[str, str], float]:
    ids = _ids()
    t0 = time.time() - 30
    store = DictStore()
    lineage = {"trace_id": trace_id} if trace_id else {}
    store.add(ids["root"], _lifecycle(ids["root"], "app.start", t0, ids["root"], **lineage))
    store.add(
        ids["h1"],
        _lifecycle(
            ids["h1"],
            "app.part",
            t0 + 2,
            ids["root"],
            ids["root"],
            group_id="g",
            chord_id=ids["cb"],
            **lineage,
        ),
    )
    # h2 is retried once (with a reason), then fails for good.
    h2 = ids["h2"]
    common = {
        "name": "app.part",
        "root_id": ids["root"],
        "parent_id": ids["root"],
        "group_id": "g",
        **lineage,
    }
    worker = {"hostname": "celery@box", "pid": 43}
    store.add(
        h2,
        [
            _ev("sent", h2, t0 + 2, queue="parts", retries=0, chord_id=ids["cb"], **common),
            _ev("received", h2, t0 + 2.5, retries=0, **common, **worker),
            _ev("started", h2, t0 + 3, retries=0, **common, **worker),
            _ev("retried", h2, t0 + 3.5, retries=0, reason="ConnectionError('db down')", **common, **worker),
            _ev("sent", h2, t0 + 3.6, retries=1, **{**common, "parent_id": h2}),
            _ev("started", h2, t0 + 4, retries=1, **common, **worker),
            _ev(
                "failed",
                h2,
                t0 + 5,
                retries=1,
                exception="ValueError: boom",
                traceback="Traceback...\nValueError: boom",
                **common,
                **worker,
            ),
        ],
    )
    store.add(ids["cb"], _lifecycle(ids["cb"], "app.join", t0 + 6, ids["root"], ids["h1"], **lineage))
    return store, ids, t0


def _one(spans: dict[str, list[ReceivedSpan]], name: str) -> ReceivedSpan:
    assert len(spans[name]) == 1, spans[name]
    return spans[name][0]


def test_chord_tasks_become_linked_spans_with_their_own_times() -> None:
    w3c_trace = uuid.uuid4().hex
    store, ids, t0 = _chord_store(w3c_trace)
    with otlp_receiver() as receiver:
        exporter = OtlpExporter(receiver.url + "/v1/traces", store, service_name="orders", timeout=5)  # type: ignore[arg-type]
        try:
            exporter(list(ids.values()))
            assert exporter.flush(20)
        finally:
            exporter.close()
        spans = receiver.by_name()

    assert sorted(s.name for group in spans.values() for s in group) == [
        "app.join",
        "app.part",
        "app.part",
        "app.start",
    ]
    by_id = {s.attributes["messaging.message.id"]: s for group in spans.values() for s in group}
    root, h1, h2, cb = (by_id[ids[k]] for k in ("root", "h1", "h2", "cb"))

    # One OpenTelemetry trace: the request's W3C trace id, so the spans join the user's own trace.
    assert {s.trace_id for s in by_id.values()} == {w3c_trace}
    # Span ids come from task ids; parents point at the parent task's span.
    assert root.parent_span_id == ""
    for span in (h1, h2):
        assert span.parent_span_id == root.span_id == f"{span_id_for(ids['root']):016x}"
    assert cb.parent_span_id == h1.span_id

    # started -> finished, in nanoseconds.
    assert root.start_ns == int((t0 + 0.2) * 1e9)
    assert root.end_ns == int((t0 + 1.2) * 1e9)
    assert h2.start_ns == int((t0 + 3) * 1e9)
    assert h2.end_ns == int((t0 + 5) * 1e9)

    # Messaging semantic conventions plus celery-flow's own attributes.
    assert h1.kind == SPAN_KIND_CONSUMER
    assert h1.attributes["messaging.system"] == "celery"
    assert h1.attributes["messaging.destination.name"] == "celery"
    assert h2.attributes["messaging.destination.name"] == "parts"
    assert h1.attributes["celery.task.name"] == "app.part"
    assert h1.attributes["celery.root_id"] == ids["root"]
    assert h1.attributes["celery.chord_id"] == ids["cb"]
    assert h1.attributes["celery.hostname"] == "celery@box"
    assert h1.attributes["celery.state"] == "SUCCESS"
    assert h1.attributes["celery_flow.trace_id"] == w3c_trace
    assert h1.resource["service.name"] == "orders"
    assert h1.status_code == STATUS_OK

    # Queued time, retries with their reason, and the failure as status + exception event.
    queued = [e for e in h1.events if e[0] == "celery.queued"]
    assert queued
    assert queued[0][2]["celery.queued_seconds"] == pytest.approx(0.2)
    assert h2.attributes["celery.retries"] == 1
    retries = [e for e in h2.events if e[0] == "celery.retry"]
    assert len(retries) == 1
    assert retries[0][1] == int((t0 + 3.5) * 1e9)
    assert retries[0][2]["celery.retry.reason"] == "ConnectionError('db down')"
    assert h2.status_code == STATUS_ERROR
    assert h2.status_message == "ValueError: boom"
    exception = next(e for e in h2.events if e[0] == "exception")
    assert exception[2]["exception.type"] == "ValueError"
    assert exception[2]["exception.message"] == "boom"
    assert "Traceback" in exception[2]["exception.stacktrace"]


def test_trace_id_from_root_when_no_w3c_trace_id_and_each_task_exported_once() -> None:
    store, ids, _ = _chord_store(None)
    with otlp_receiver() as receiver:
        exporter = OtlpExporter(receiver.url + "/v1/traces", store, timeout=5)  # type: ignore[arg-type]
        try:
            # Changed ids arrive repeatedly (every commit that touched a task): one span per task anyway.
            for _ in range(3):
                exporter(list(ids.values()))
            # An unknown id and a task that is still running are skipped, not exported.
            running = str(uuid.uuid4())
            store.add(running, _lifecycle(running, "app.slow", time.time(), ids["root"], ids["root"])[:3])
            exporter([running, "no-such-task"])
            assert exporter.flush(20)
        finally:
            exporter.close()
        spans = [s for group in receiver.by_name().values() for s in group]

    assert sorted(s.attributes["messaging.message.id"] for s in spans) == sorted(ids.values())
    assert {s.trace_id for s in spans} == {uuid.UUID(ids["root"]).hex}
    assert spans[0].resource["service.name"] == "celery"
    stats = exporter.stats()
    assert stats["exported"] == 4
    assert stats["failed"] == 0


def test_non_hex_trace_ids_share_one_otel_trace() -> None:
    store, ids, _ = _chord_store("req-7f3a")
    with otlp_receiver() as receiver:
        exporter = OtlpExporter(receiver.url + "/v1/traces", store, timeout=5)  # type: ignore[arg-type]
        try:
            exporter(list(ids.values()))
            assert exporter.flush(20)
        finally:
            exporter.close()
        spans = [s for group in receiver.by_name().values() for s in group]
    assert len(spans) == 4
    assert len({s.trace_id for s in spans}) == 1
    assert spans[0].trace_id != "0" * 32
    assert {s.attributes["celery_flow.trace_id"] for s in spans} == {"req-7f3a"}


def test_collector_refusing_or_down_is_counted_and_never_blocks_the_sink() -> None:
    store, ids, _ = _chord_store(None)
    with otlp_receiver() as receiver:
        receiver.status = 400  # a collector that refuses the data: not retryable
        exporter = OtlpExporter(receiver.url + "/v1/traces", store, timeout=2)  # type: ignore[arg-type]
        try:
            exporter(list(ids.values()))
            assert exporter.flush(20)
            stats = exporter.stats()
            assert stats["failed"] == 4
            assert stats["export_errors"] >= 1
            assert stats["exported"] == 0
        finally:
            exporter.close()

    # Nothing listens on this port: the HTTP client retries inside the exporter thread while the sink,
    # called from the consumer, returns at once and a full queue drops (and counts) instead of growing.
    with otlp_receiver() as closed:
        dead_url = closed.url
    gate = threading.Event()

    class SlowStore(DictStore):
        def get_task(self, task_id: str) -> TaskDetail | None:
            gate.wait(10)
            return super().get_task(task_id)

    slow = SlowStore()
    slow.tasks = store.tasks
    exporter = OtlpExporter(dead_url + "/v1/traces", slow, timeout=1, queue_size=3, batch_size=1)  # type: ignore[arg-type]
    try:
        for _ in range(10):
            exporter(list(ids.values()))
        stats = exporter.stats()
        assert stats["received"] == 40
        assert stats["dropped"] >= 40 - 3 - 1  # bounded: queue of 3 plus one id in the thread's hands
        assert stats["queued"] <= 3
        gate.set()
        assert exporter.flush(30)
        assert exporter.stats()["export_errors"] >= 1
        assert exporter.stats()["exported"] == 0
    finally:
        gate.set()
        exporter.close()


def test_endpoint_resolution_follows_the_otel_environment_variables() -> None:
    assert resolve_otlp_endpoint(None, {}) is None
    assert resolve_otlp_endpoint("http://tempo:4318", {}) == "http://tempo:4318/v1/traces"
    assert resolve_otlp_endpoint("http://tempo:4318/", {}) == "http://tempo:4318/v1/traces"
    assert resolve_otlp_endpoint("https://c:4318/v1/traces", {}) == "https://c:4318/v1/traces"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert resolve_otlp_endpoint(None, env) == "http://collector:4318/v1/traces"
    assert resolve_otlp_endpoint("http://flag:4318", env) == "http://flag:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://collector:4318/custom/traces"
    assert resolve_otlp_endpoint(None, env) == "http://collector:4318/custom/traces"
    with pytest.raises(ConfigError, match="not an OTLP/HTTP URL"):
        resolve_otlp_endpoint("collector:4317", {})
