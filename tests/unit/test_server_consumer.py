"""The consumer loop against the in-process transport and a real SQLite store: acks, rejects, retries."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.events import event, finished_task
from tests.support.wait import wait_for

from celery_flow.consumer import Consumer
from celery_flow.events import MAX_EVENT_BYTES, Event, encode
from celery_flow.server.config import ServerConfig
from celery_flow.server.runtime import Runtime
from celery_flow.store import open_store
from celery_flow.store.base import Store, StoreError
from celery_flow.transport.memory import MemoryTransport

task_events = functools.partial(finished_task, step=0.01, name="t.add")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'flow.db'}")
    yield s
    s.close()


@pytest.fixture
def url() -> str:
    return f"memory://{uuid.uuid4().hex}"


@contextmanager
def running(consumer: Consumer) -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive()


def unacked(transport: MemoryTransport, group: str = "celery_flow") -> int | None:
    """The group's entries not acknowledged yet (its lag, as the consumer reports it)."""
    return transport.subscribe(group, "probe").lag()


def test_folds_batches_and_acks_after_commit(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    ids = [uuid.uuid4().hex for _ in range(30)]
    transport.publish([encode(e) for t in ids for e in task_events(t)])
    consumer = Consumer(url, store, prefix="p", batch=7, read_timeout=0.05)
    with running(consumer):
        wait_for(lambda: consumer.stats()["acked_total"] == 120, what="120 entries acked")
    assert store.stats().events == 120
    assert {store.get_task(t).state for t in ids} == {"SUCCESS"}  # type: ignore[union-attr]
    assert unacked(transport) == 0
    stats = consumer.stats()
    assert stats["status"] == "stopped"
    assert stats["events_total"] == 120
    assert stats["batches_total"] >= 120 // 7


def test_malformed_entries_are_counted_logged_once_and_acked(
    store: Store, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    transport = MemoryTransport(url, prefix="p")
    good = uuid.uuid4().hex
    valid = encode(event("sent", good, name="t.ok", root_id=good))
    bad = {
        "not_json": [b"{nope", b"", b'{"v": 1,'],
        "not_utf8": [b"\xff\xfe\x00garbage"],
        "missing_field": [b'{"v": 1, "type": "sent", "ts": 1.0}', b'{"v":1,"id":"x","type":"sent","ts":1}'],
        "invalid_field": [
            b'{"v": 1, "id": "x", "type": "sent", "ts": "yesterday", "task_id": "t"}',
            b'{"v": 1, "id": "y", "type": "exploded", "ts": 1.0}',
            b"42",
            b"null",
        ],
        "unsupported_version": [b'{"v": 99, "id": "z", "type": "sent", "ts": 1.0, "task_id": "t"}'],
        "oversize": [b'{"v": 1, "pad": "' + b"x" * MAX_EVENT_BYTES + b'"}'],
    }
    transport.publish([*bad["not_json"], valid, *[p for k, v in bad.items() if k != "not_json" for p in v]])
    consumer = Consumer(url, store, prefix="p", read_timeout=0.05)
    with caplog.at_level(logging.WARNING, logger="celery_flow.consumer"), running(consumer):
        wait_for(lambda: consumer.stats()["acked_total"] == 13, what="every entry acknowledged")
    expected = {kind: len(payloads) for kind, payloads in bad.items()}
    assert consumer.stats()["rejected"] == expected
    # persisted beside the data, so /api/health of any server process shows them
    counters = store.stats().counters
    assert {k: v for k, v in counters.items() if k.startswith("rejected.")} == {
        f"rejected.{k}": v for k, v in expected.items()
    }
    assert store.get_task(good) is not None
    assert unacked(transport) == 0
    for kind in expected:
        assert sum(f"({kind})" in r.getMessage() for r in caplog.records) == 1, kind


def test_publisher_dropped_reports_are_summed(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    transport.publish([encode(event("publisher.dropped", dropped=n, hostname="w1")) for n in (5, 7)])
    consumer = Consumer(url, store, prefix="p", read_timeout=0.05)
    with running(consumer):
        wait_for(lambda: consumer.stats()["acked_total"] == 2)
    assert store.stats().counters.get("publisher.dropped") == 12
    assert store.stats().tasks == 0


class FlakyStore:
    """A real store whose writes fail `failures` times first (a locked or unreachable database)."""

    def __init__(self, inner: Store, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def apply(self, events: Sequence[Event], counters: Any = None) -> list[str]:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database is locked")
        return self.inner.apply(events, counters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_store_errors_keep_the_batch_unacked_and_retry(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    task_id = uuid.uuid4().hex
    transport.publish([encode(e) for e in task_events(task_id)])
    flaky = FlakyStore(store, failures=2)
    consumer = Consumer(url, flaky, prefix="p", read_timeout=0.05, max_backoff=0.2)  # type: ignore[arg-type]
    statuses: list[str] = []
    with running(consumer):
        wait_for(lambda: statuses.append(consumer.stats()["status"]) or consumer.stats()["acked_total"] == 4)
    assert "store_error" in statuses
    assert consumer.stats()["store_errors_total"] == 2
    assert flaky.calls == 3  # one batch, retried until it committed: never re-read, never skipped
    assert store.get_task(task_id).state == "SUCCESS"  # type: ignore[union-attr]
    assert unacked(transport) == 0


def test_a_store_refusing_everything_for_a_while_loses_nothing(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    ids = [uuid.uuid4().hex for _ in range(3)]
    transport.publish([encode(e) for t in ids for e in task_events(t)])
    flaky = FlakyStore(store, failures=8)  # past the poison threshold, yet every event is fine
    consumer = Consumer(url, flaky, prefix="p", read_timeout=0.05, max_backoff=0.05)  # type: ignore[arg-type]
    with running(consumer):
        wait_for(lambda: consumer.stats()["acked_total"] == 12)
    assert {store.get_task(t).state for t in ids} == {"SUCCESS"}  # type: ignore[union-attr]
    assert consumer.stats()["rejected"] == {}
    assert store.stats().events == 12


def test_stop_during_store_outage_leaves_entries_pending_for_the_next_run(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    task_id = uuid.uuid4().hex
    transport.publish([encode(e) for e in task_events(task_id)])
    down = FlakyStore(store, failures=10**9)
    consumer = Consumer(url, down, prefix="p", name="c1", read_timeout=0.05, max_backoff=0.1)  # type: ignore[arg-type]
    with running(consumer):
        wait_for(lambda: consumer.stats()["status"] == "store_error")
    assert unacked(transport) == 4
    assert store.get_task(task_id) is None
    # the same member restarted with a working store re-reads its own pending entries
    again = Consumer(url, store, prefix="p", name="c1", read_timeout=0.05)
    with running(again):
        wait_for(lambda: again.stats()["acked_total"] == 4)
    assert store.get_task(task_id).state == "SUCCESS"  # type: ignore[union-attr]
    assert unacked(transport) == 0


def test_redelivery_changes_nothing(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    task_id = uuid.uuid4().hex
    payloads = [encode(e) for e in task_events(task_id)]
    transport.publish(payloads + payloads)  # at-least-once: the same events twice
    consumer = Consumer(url, store, prefix="p", read_timeout=0.05)
    with running(consumer):
        wait_for(lambda: consumer.stats()["acked_total"] == 8)
    detail = store.get_task(task_id)
    assert detail is not None
    assert [e.type for e in detail.events] == ["sent", "received", "started", "succeeded"]
    assert store.stats().events == 4


def test_sinks_get_changed_ids_and_a_failing_sink_never_stops_ingest(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    seen: list[str] = []

    def broken(ids: list[str]) -> None:
        raise RuntimeError("exporter down")

    consumer = Consumer(url, store, prefix="p", read_timeout=0.05, sinks=[broken, seen.extend])
    ids = [uuid.uuid4().hex for _ in range(3)]
    with running(consumer):
        for task_id in ids:
            transport.publish([encode(e) for e in task_events(task_id)])
        wait_for(lambda: set(ids) <= set(seen), what="sink saw every task")
    assert consumer.stats()["sink_errors_total"] >= 1
    assert all(store.get_task(t) is not None for t in ids)


def test_retention_sweeps_old_tasks(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    transport.publish([encode(e) for e in task_events(old, ts=time.time() - 7200)])
    transport.publish([encode(e) for e in task_events(new)])
    consumer = Consumer(url, store, prefix="p", read_timeout=0.05, ttl=3600, sweep_interval=0.1)
    with running(consumer):
        wait_for(lambda: consumer.stats()["swept_total"] >= 1, what="old task swept")
    assert store.get_task(old) is None
    assert store.get_task(new) is not None


def test_unreachable_broker_reports_reconnecting_and_keeps_trying(store: Store) -> None:
    consumer = Consumer("redis://127.0.0.1:1/0", store, read_timeout=0.05, max_backoff=0.1)
    with running(consumer):
        wait_for(lambda: consumer.stats()["reconnects_total"] >= 3, what="several reconnect attempts")
        stats = consumer.stats()
        assert stats["status"] == "reconnecting"
        assert "127.0.0.1:1" in stats["detail"]


class PoisonStore(FlakyStore):
    """A store that answers pings but can never hold one particular event (like a NUL in PostgreSQL)."""

    def apply(self, events: Sequence[Event], counters: Any = None) -> list[str]:
        self.calls += 1
        if any(e.name == "poison" for e in events):
            raise StoreError("invalid byte sequence")
        return self.inner.apply(events, counters)


def test_a_poison_event_is_isolated_and_rejected_not_retried_forever(store: Store, url: str) -> None:
    transport = MemoryTransport(url, prefix="p")
    good = uuid.uuid4().hex
    poison = event("sent", uuid.uuid4().hex, name="poison")
    transport.publish(
        [encode(e) for e in task_events(good)[:2]]
        + [encode(poison)]
        + [encode(e) for e in task_events(good)[2:]]
    )
    consumer = Consumer(url, PoisonStore(store, 0), prefix="p", read_timeout=0.05, max_backoff=0.05)  # type: ignore[arg-type]
    with running(consumer):
        wait_for(lambda: consumer.stats()["acked_total"] == 5, what="the whole batch acknowledged")
    assert store.get_task(good).state == "SUCCESS"  # type: ignore[union-attr]
    assert consumer.stats()["rejected"] == {"unstorable": 1}
    assert store.stats().counters.get("rejected.unstorable") == 1
    assert consumer.stats()["status"] == "stopped"


def test_the_runtime_stops_the_consumer_then_closes_sinks_then_the_store(tmp_path: Path, url: str) -> None:
    class Exporter:
        """Reads back what changed, as the OTLP exporter does, still when it is closed."""

        def __init__(self) -> None:
            self.ids: list[str] = []
            self.at_close: tuple[bool, str | None] | None = None

        def __call__(self, ids: list[str]) -> None:
            self.ids.extend(ids)

        def close(self) -> None:
            task = store.get_task(self.ids[0])
            self.at_close = (thread.is_alive(), task.state if task else None)

    exporter = Exporter()
    config = ServerConfig(broker_url=url, store_url=f"sqlite:///{tmp_path / 'flow.db'}", prefix="p",
                          ttl=None, max_tasks=None, basic_auth=None, embedded_consumer=True)  # fmt: skip
    runtime = Runtime(config, sinks=[exporter])
    store = runtime.open()
    runtime.start_consumer()
    assert runtime.consumer is not None
    thread = runtime.consumer._thread
    assert thread is not None
    task_id = uuid.uuid4().hex
    MemoryTransport(url, prefix="p").publish([encode(e) for e in task_events(task_id)])
    wait_for(lambda: exporter.ids, what="the sink told of the folded task")
    runtime.close()
    assert exporter.at_close == (False, "SUCCESS")  # the consumer had stopped; the store still answered
    with pytest.raises(StoreError):
        store.get_task(task_id)  # closed last
    runtime.close()  # closing again does nothing
