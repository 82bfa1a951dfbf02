"""The publisher never blocks or raises into its caller, drops oldest-first when the broker is away,
reports what it dropped once the broker is back, and works again in a forked child."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.events import event
from tests.support.wait import wait_for

from celery_flow.events import Event, decode, encode
from celery_flow.tracking.publisher import Publisher
from celery_flow.transport import TransportError
from celery_flow.transport.memory import MemoryTransport


def task_event(n: int) -> Event:
    return event("sent", f"task-{n}", name="t.noop")


@pytest.fixture
def memory() -> MemoryTransport:
    return MemoryTransport(f"memory://{uuid.uuid4().hex}", prefix="p")


def published(transport: MemoryTransport) -> list[Event]:
    return [decode(raw) for raw in transport.entries()]


def test_events_are_published_in_order(memory: MemoryTransport) -> None:
    publisher = Publisher(memory.url, "p", transport_factory=lambda: memory)
    try:
        for n in range(1200):
            publisher.put(task_event(n))
        assert publisher.flush(5.0)
        ids = [e.task_id for e in published(memory)]
        assert ids == [f"task-{n}" for n in range(1200)]
        assert publisher.dropped_total == 0
    finally:
        publisher.stop()


def test_broker_down_drops_oldest_then_reports_drop_count(memory: MemoryTransport) -> None:
    memory.set_available(False)
    publisher = Publisher(memory.url, "p", buffer_size=100, transport_factory=lambda: memory)
    try:
        for n in range(1000):
            publisher.put(task_event(n))  # never raises, never waits
        wait_for(lambda: publisher.failures > 0, 10, "a failed publish attempt", retry_on=())
        memory.set_available(True)
        wait_for(
            lambda: any(e.type == "publisher.dropped" for e in published(memory)),
            10,
            "a publisher.dropped report",
            retry_on=(),
        )
        assert publisher.flush(5.0)
        events = published(memory)
        task_ids = [e.task_id for e in events if e.type == "sent"]
        dropped = sum(e.dropped or 0 for e in events if e.type == "publisher.dropped")
        # Newest survive, oldest were dropped, and every event is either delivered or counted.
        assert "task-999" in task_ids
        assert "task-0" not in task_ids
        assert len(task_ids) + dropped == 1000
        assert task_ids == sorted(task_ids, key=lambda t: int(t.split("-")[1]))
        report = next(e for e in events if e.type == "publisher.dropped")
        assert report.pid == os.getpid()
    finally:
        publisher.stop()


class HangingTransport:
    """A broker that accepts the connection and then never answers (like a SIGSTOPped Redis)."""

    safe_url = "hang://"

    def __init__(self) -> None:
        self.release = threading.Event()

    def publish(self, payloads: Sequence[bytes]) -> None:
        self.release.wait(30)
        raise TransportError("timed out")

    def close(self) -> None:
        self.release.set()


def test_put_never_waits_for_a_hanging_broker_and_stop_is_bounded() -> None:
    hanging = HangingTransport()
    publisher = Publisher("hang://", "p", buffer_size=50, transport_factory=lambda: hanging)  # type: ignore[arg-type,return-value]
    try:
        started = time.monotonic()
        for n in range(10_000):
            publisher.put(task_event(n))
        # 10,000 puts against a hung broker: nothing waited on it (generous bound).
        assert time.monotonic() - started < 2.0
        assert publisher.dropped_total >= 10_000 - 50 - 500
        started = time.monotonic()
        publisher.stop(timeout=0.5)
        assert time.monotonic() - started < 3.0
    finally:
        hanging.release.set()


def test_a_transport_that_cannot_be_created_is_survived() -> None:
    def broken() -> MemoryTransport:
        raise TransportError("connection refused")

    publisher = Publisher("memory://x", "p", buffer_size=10, transport_factory=broken)
    try:
        for n in range(100):
            publisher.put(task_event(n))
        wait_for(lambda: publisher.failures > 0, 10, "a failed publish attempt", retry_on=())
        assert publisher.dropped_total >= 90
    finally:
        publisher.stop(timeout=0.2)


class FileTransport:
    """Appends each payload as a line to a file: visible across fork()."""

    safe_url = "file://"

    def __init__(self, path: str) -> None:
        self.path = path

    def publish(self, payloads: Sequence[bytes]) -> None:
        with open(self.path, "ab") as fh:
            for payload in payloads:
                fh.write(payload + b"\n")

    def close(self) -> None:
        pass


def test_publisher_restarts_in_a_forked_child(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "events.jsonl")
    publisher = Publisher("file://", "p", transport_factory=lambda: FileTransport(path))  # type: ignore[arg-type,return-value]
    try:
        publisher.put(task_event(0))
        assert publisher.flush(5.0)
        pid = os.fork()
        if pid == 0:  # child: the parent's thread does not exist here; a new one must start
            code = 1
            try:
                publisher.put(event("sent", "from-child", name="t"))
                code = 0 if publisher.flush(5.0) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        publisher.put(task_event(1))
        assert publisher.flush(5.0)
        with open(path, "rb") as fh:
            ids = [decode(line).task_id for line in fh.read().splitlines()]
        assert sorted(ids) == sorted(["task-0", "from-child", "task-1"])
    finally:
        publisher.stop()


# -- recorded events: encoded from shared fields, decoded as if built as Events ---------------------------
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
_text = st.none() | st.text(max_size=20)
_fields = st.fixed_dictionaries(
    {"task_id": st.text(min_size=1, max_size=36)},
    optional={
        "name": _text,
        "root_id": _text,
        "parent_id": _text,
        "group_id": _text,
        "chord_id": _text,
        "links": st.none() | st.lists(st.text(max_size=8), max_size=3),
        "trace_id": _text,
        "hostname": _text,
        "pid": st.none() | st.integers(0, 2**31),
        "queue": _text,
        "retries": st.none() | st.integers(0, 100),
        "eta": st.none() | st.floats(0, 4e9),
        "args": _json,
        "kwargs": _json,
    },
)
_extra = st.none() | st.fixed_dictionaries(
    {}, optional={"result": _json, "runtime": st.none() | st.floats(0, 1e6), "reason": _text}
)


@settings(max_examples=300, deadline=None)
@given(fields=_fields, extras=st.lists(_extra, min_size=1, max_size=3), ts=st.floats(0, 4e9))
def test_recorded_events_decode_to_the_events_they_describe(
    fields: dict[str, object], extras: list[dict[str, object] | None], ts: float
) -> None:
    """The events of one task share one fields dict (encoded once per batch): each still decodes to the
    Event built from its own type, time, fields and extra fields, with its own id."""
    memory = MemoryTransport(f"memory://{uuid.uuid4().hex}", prefix="p")
    publisher = Publisher(memory.url, "p", transport_factory=lambda: memory)
    try:
        types = ["received", "started", "succeeded"]
        for n, extra in enumerate(extras):
            publisher.record(types[n], ts + n, fields, extra)  # type: ignore[arg-type]
        assert publisher.flush(5.0)
        got = published(memory)
    finally:
        publisher.stop()
    assert len(got) == len(extras)
    assert len({e.id for e in got}) == len(got)
    assert all(len(e.id) == 32 for e in got)
    for n, (e, extra) in enumerate(zip(got, extras, strict=True)):
        expected = event(types[n], ts=ts + n, id=e.id, **fields, **(extra or {}))  # type: ignore[arg-type]
        assert e == decode(encode(expected))


def test_a_recorded_event_with_a_bad_field_is_lost_alone(memory: MemoryTransport) -> None:
    """A bug in a hook (a key that is no event field, or a key given twice) loses that event, logged,
    never its batch neighbours: as building the Event would have refused it."""
    publisher = Publisher(memory.url, "p", transport_factory=lambda: memory)
    try:
        shared = {"task_id": "a", "name": "t.x"}
        publisher.record("received", 1.0, shared)
        publisher.record("started", 2.0, {"task_id": "b", "no_such_field": 1})
        publisher.record("succeeded", 3.0, shared, {"name": "again"})
        publisher.record("succeeded", 4.0, shared, {"result": [1, 2], "runtime": 0.5})
        assert publisher.flush(5.0)
        got = published(memory)
    finally:
        publisher.stop()
    assert [(e.type, e.task_id, e.ts) for e in got] == [("received", "a", 1.0), ("succeeded", "a", 4.0)]
    assert got[1].result == [1, 2]
    assert got[1].runtime == 0.5
    assert got[1].name == "t.x"
