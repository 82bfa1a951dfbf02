"""OTLP export against a real OTLP/HTTP receiver (protobuf decoded with opentelemetry-proto).

The first tests feed tasks folded from real event sequences; the last one runs the whole path: a real
Celery worker runs a chord, the real consumer folds the events into a real store, and the exporter sink
sends the spans the receiver checks.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import Task, chord
from celery.contrib.testing.worker import start_worker
from tests.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.support.canvas_app import make_app
from tests.support.events import event
from tests.support.server_helpers import CLI, cli_env, cli_process, free_port
from tests.support.wait import wait_for

import celery_flow
from celery_flow.consumer import Consumer
from celery_flow.events import Event, encode
from celery_flow.export import otlp_export_endpoint, resolve_otlp_endpoint
from celery_flow.export.otlp import OtlpExporter
from celery_flow.export.spans import span_id_for
from celery_flow.flow.fold import fold_task
from celery_flow.flow.model import TaskDetail
from celery_flow.store import open_store
from celery_flow.transport import from_url
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
        event("sent", task_id, t0, queue="celery", retries=0, **common),
        event("received", task_id, t0 + 0.1, retries=0, **common, **worker),
        event("started", task_id, t0 + 0.2, retries=0, **common, **worker),
    ]
    if outcome == "succeeded":
        events.append(event("succeeded", task_id, t0 + 1.2, retries=0, runtime=1.0, **common, **worker))
    else:
        events.append(
            event(
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
            event("sent", h2, t0 + 2, queue="parts", retries=0, chord_id=ids["cb"], **common),
            event("received", h2, t0 + 2.5, retries=0, **common, **worker),
            event("started", h2, t0 + 3, retries=0, **common, **worker),
            event(
                "retried", h2, t0 + 3.5, retries=0, reason="ConnectionError('db down')", **common, **worker
            ),
            event("sent", h2, t0 + 3.6, retries=1, **{**common, "parent_id": h2}),
            event("started", h2, t0 + 4, retries=1, **common, **worker),
            event(
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
        # coalesce=60: nothing is read until flush(), so the repeated ids below are provably coalesced.
        exporter = OtlpExporter(receiver.url + "/v1/traces", store, timeout=5, coalesce=60)  # type: ignore[arg-type]
        try:
            # Changed ids arrive repeatedly (every commit that touched a task): one read and one span each.
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
    assert store.reads == len(ids) + 2
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
        many = [*ids.values(), *(f"unknown-{i}" for i in range(36))]
        for task_id in many:
            exporter([task_id])
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


def test_close_does_not_wait_out_the_retries_of_a_collector_that_keeps_failing() -> None:
    store, ids, _ = _chord_store(None)
    with otlp_receiver() as receiver:
        receiver.status = 503  # retryable: the OTLP client backs off and retries for up to its timeout
        before = set(threading.enumerate())
        exporter = OtlpExporter(receiver.url + "/v1/traces", store, timeout=120, coalesce=0)  # type: ignore[arg-type]
        (thread,) = (t for t in set(threading.enumerate()) - before if t.name == "celery-flow-otlp")
        exporter(list(ids.values()))
        receiver.wait_for(lambda _: receiver.requests >= 1)
        exporter.close(timeout=1)
        # Shutting the HTTP exporter down aborted the 120 s retry loop: the thread is gone, spans counted.
        assert not thread.is_alive()
        assert exporter.stats()["failed"] == 4
        exporter.close()  # idempotent


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


def test_environment_only_endpoint_never_stops_a_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # Capture the warnings on the logger itself: a Celery worker or uvicorn started earlier in the session
    # may have reconfigured logging (disabled loggers, no propagation).
    logger = logging.getLogger("celery_flow.export")
    monkeypatch.setattr(logger, "disabled", False)
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
        assert otlp_export_endpoint(None, env) == "http://collector:4318/v1/traces"
        # A pod-wide variable meant for gRPC: export stays off with a warning.
        assert otlp_export_endpoint(None, {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None
        assert "http/protobuf only" in warnings[-1]
        # The `otlp` extra missing: off with a warning when only the environment asked for export,
        # an error when the flag did.
        monkeypatch.setitem(sys.modules, "celery_flow.export.otlp", None)
        assert otlp_export_endpoint(None, env) is None
        assert "pip install 'celery-flow[otlp]'" in warnings[-1]
        with pytest.raises(ConfigError, match=r"pip install 'celery-flow\[otlp\]'"):
            otlp_export_endpoint("http://collector:4318", {})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ---- end to end: real worker -> transport -> consumer -> store -> exporter sink -> receiver ----------


@pytest.mark.timeout(150)
def test_real_chord_through_consumer_and_store_exports_linked_spans(
    transport_url: str, redis_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    app = make_app(redis_url, redis_url, transport_url, unique_prefix, main=f"otlp_{unique_prefix}")
    app.conf.task_default_queue = unique_prefix

    @app.task(name=f"{unique_prefix}.checkout", bind=True)
    def checkout(self: Task) -> str:
        """A root task that fans out into a chord: two header members and a callback."""
        header = [app.tasks["t.add"].s(1, 1), app.tasks["t.add"].s(2, 2)]
        return str(chord(header)(app.tasks["t.xsum"].s()).id)

    store = open_store(f"sqlite:///{tmp_path}/flow.db")
    w3c_trace = uuid.uuid4().hex
    try:
        with otlp_receiver() as receiver:
            exporter = OtlpExporter(receiver.url + "/v1/traces", store, service_name="shop", timeout=5)
            consumer = Consumer(
                transport_url, store, prefix=unique_prefix, read_timeout=0.2, sinks=[exporter]
            )
            stop = threading.Event()
            consuming = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
            consuming.start()
            try:
                wait_for(
                    lambda: consumer.stats()["status"] == "running", 20, "the consumer to run", retry_on=()
                )
                with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
                    with celery_flow.trace(w3c_trace):
                        root_id = checkout.delay().id
                    failing_id = app.tasks["t.fail"].delay("card declined").id
                    flaky_id = app.tasks["t.flaky"].delay(succeed_on=1, countdown=0.1).id
                    wait_for(
                        lambda: len(receiver.spans) >= 6,
                        60,
                        "six spans exported (root, 2 members, callback, 2)",
                        retry_on=(),
                    )
            finally:
                stop.set()
                consuming.join(15)
                exporter.close()

            spans = {s.attributes["messaging.message.id"]: s for s in receiver.spans}
            assert len(receiver.spans) == len(spans) == 6, [s.name for s in receiver.spans]
            tasks = {task_id: store.get_task(task_id) for task_id in spans}
    finally:
        celery_flow.shutdown(app)
        store.close()

    root = spans[root_id]
    members = [s for s in spans.values() if s.name == "t.add"]
    (callback,) = [s for s in spans.values() if s.name == "t.xsum"]
    assert root.name == f"{unique_prefix}.checkout"
    assert len(members) == 2

    # The chord lives in the user's W3C trace; span ids are the task ids' and parents are parent tasks'.
    for span in (root, *members, callback):
        assert span.trace_id == w3c_trace
        assert span.attributes["celery_flow.trace_id"] == w3c_trace
        assert span.attributes["celery.root_id"] == root_id
        assert span.span_id == f"{span_id_for(span.attributes['messaging.message.id']):016x}"
    assert root.parent_span_id == ""
    assert {m.parent_span_id for m in members} == {root.span_id}
    parent_of_callback = tasks[callback.attributes["messaging.message.id"]]
    assert parent_of_callback is not None
    assert parent_of_callback.parent_id is not None
    assert callback.parent_span_id == spans[parent_of_callback.parent_id].span_id
    assert callback.parent_span_id in {root.span_id, *(m.span_id for m in members)}
    assert {m.attributes["celery.chord_id"] for m in members} == {callback.attributes["messaging.message.id"]}

    # Timestamps are the task's own: started -> finished as stored; the callback ran after its header.
    for task_id, span in spans.items():
        task = tasks[task_id]
        assert task is not None
        assert span.start_ns == int(task.started_at * 1e9)  # type: ignore[operator]
        assert span.end_ns == int(task.finished_at * 1e9)  # type: ignore[operator]
        assert span.start_ns <= span.end_ns
        assert span.attributes["celery.hostname"] == task.hostname
        assert span.attributes["messaging.destination.name"] == unique_prefix
        assert span.resource["service.name"] == "shop"
        assert any(e[0] == "celery.queued" for e in span.events)
    assert callback.start_ns >= max(m.end_ns for m in members)
    assert all(s.status_code == STATUS_OK for s in (root, *members, callback))

    # A real failure and a real retry, outside any trace: trace ids derived from their own root ids.
    failed = spans[failing_id]
    assert failed.trace_id == uuid.UUID(failing_id).hex
    assert failed.status_code == STATUS_ERROR
    assert failed.status_message == "ValueError: card declined"
    exception = next(e for e in failed.events if e[0] == "exception")
    assert exception[2]["exception.type"] == "ValueError"
    assert exception[2]["exception.message"] == "card declined"
    assert "Traceback" in exception[2]["exception.stacktrace"]
    flaky = spans[flaky_id]
    assert flaky.status_code == STATUS_OK
    assert flaky.attributes["celery.retries"] == 1
    (retry,) = [e for e in flaky.events if e[0] == "celery.retry"]
    assert "attempt 0 failed" in retry[2]["celery.retry.reason"]
    assert exporter.stats()["exported"] == 6
    assert exporter.stats()["dropped"] == 0


# ---- the CLI: --otlp-endpoint / OTEL_EXPORTER_OTLP_ENDPOINT on `consume` and `server` ----------------


def _publish_finished_tasks(redis_url: str, prefix: str, n: int) -> list[str]:
    """Real wire-format events for n tasks (the last one fails), published through the real transport."""
    transport = from_url(redis_url, prefix=prefix)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    events: list[Event] = []
    for i, task_id in enumerate(ids):
        events.extend(
            _lifecycle(
                task_id, "cli.task", time.time(), task_id, outcome="failed" if i == n - 1 else "succeeded"
            )
        )
    try:
        transport.publish([encode(e) for e in events])
    finally:
        transport.close()
    return ids


@pytest.mark.parametrize(
    "how",
    [
        "consume --otlp-endpoint",
        "server OTEL_EXPORTER_OTLP_ENDPOINT",
        # --reload serves from a fresh process built from the environment alone: the flag must reach it.
        "server --otlp-endpoint --reload",
    ],
)
def test_cli_exports_spans(how: str, redis_url: str, unique_prefix: str, tmp_path: Path) -> None:
    command, source, *extra = how.split()
    with otlp_receiver() as receiver:
        args = [
            "--broker-url",
            redis_url,
            "--store",
            f"sqlite:///{tmp_path}/flow.db",
            "--prefix",
            unique_prefix,
        ]
        env = cli_env()
        if source == "--otlp-endpoint":
            args += ["--otlp-endpoint", receiver.url]  # a base URL: /v1/traces is appended
        port = free_port()
        if source != "--otlp-endpoint":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        if command == "server":
            args += ["--port", str(port), *extra]
        ids = _publish_finished_tasks(redis_url, unique_prefix, 3)
        log_file = tmp_path / "cli.log"
        with cli_process(command, *args, env=env, log=log_file):
            try:
                receiver.wait_for(lambda spans: len(spans) >= 3, timeout=60)
            except AssertionError:
                raise AssertionError(log_file.read_text()) from None
            if command == "server":
                # The exporter's counters reach /api/health and /metrics.
                metrics = wait_for(
                    lambda: _exporter_metrics(port),
                    30,
                    "3 spans exported",
                    until=lambda m: m.get("otlp_exported", 0) >= 3,
                    interval=0.2,
                    retry_on=(),
                )
                assert metrics["otlp_dropped"] == 0
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                    assert "celery_flow_consumer_otlp_exported 3.0" in resp.read().decode()
        spans = {s.attributes["messaging.message.id"]: s for s in receiver.spans}
    assert sorted(spans) == sorted(ids)
    assert {s.name for s in spans.values()} == {"cli.task"}
    assert spans[ids[-1]].status_code == STATUS_ERROR
    assert spans[ids[0]].status_code == STATUS_OK


def _exporter_metrics(port: int) -> dict[str, Any]:
    """The consumer's metrics from the server's health report; empty while the server does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            metrics: dict[str, Any] = json.loads(resp.read())["consumer"]["metrics"]
    except OSError:
        return {}
    return metrics


def _refused(argv: list[str]) -> str:
    """Run a CLI command that must stop at a usage error: exit 2, no traceback; its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def test_cli_otlp_endpoint_errors_are_one_line(redis_url: str, tmp_path: Path) -> None:
    base = ["consume", "--broker-url", redis_url, "--store", f"sqlite:///{tmp_path}/flow.db"]
    bad_url = "--otlp-endpoint='collector:4317' is not an OTLP/HTTP URL"
    assert bad_url in _refused([*CLI, *base, "--otlp-endpoint", "collector:4317"])
    # With --reload too, before the reloader starts (the served process could only log it).
    reload = [*CLI, "server", "--reload", "--port", str(free_port()), *base[1:]]
    assert bad_url in _refused([*reload, "--otlp-endpoint", "collector:4317"])

    # Without the `otlp` extra (the SDK made unimportable): the install command, not a traceback.
    no_sdk = (
        "import sys; sys.modules['opentelemetry.sdk'] = None; "
        "sys.argv[0] = 'celery-flow'; from celery_flow.cli import main; main()"
    )
    missing = _refused([sys.executable, "-c", no_sdk, *base, "--otlp-endpoint", "http://127.0.0.1:4318"])
    assert "pip install 'celery-flow[otlp]'" in missing
