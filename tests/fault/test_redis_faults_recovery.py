"""Redis (celery-flow's transport) frozen or killed during a burst of real tasks: the books must balance.

tests/fault/test_publisher_faults.py (tracking) shows tasks are never slowed and that drops get reported.
This adds what an operator reads in /api/health after the outage, end to end through the real consumer
and store: every event the bounded buffer kept arrives, and the reported drop count is exact:

    events stored for the burst's tasks + publisher.dropped counted by the consumer == events fired

A count that is too high (an event both delivered and reported dropped) or too low (an event silently
lost) is a bug a user would see as wrong numbers. The burst's tasks all succeed while Redis is still
frozen/down (results travel through Celery's own Redis, not the frozen one): nothing waited on it.

Redis runs privately (its own port, AOF `appendfsync always` so a SIGKILL loses no acknowledged write:
what is measured is the publisher, not Redis durability).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from celery_flow.consumer import Consumer
from celery_flow.store import open_store
from celery_flow.store.base import Store
from celery_flow.tracking.hooks import trackers
from celery_flow.transport import DeliveryUnknown, TransportError
from celery_flow.transport.redis import RedisTransport, stream_key
from tests.support.redis_server import PrivateRedis
from tests.support.wait import wait_for
from tests.support.worker import tracked_worker

pytestmark = pytest.mark.timeout(150)

BURST = 150  # tasks; x4 events against a 100-event buffer: most are dropped, some are kept
BUFFER = 100
EVENTS_PER_TASK = 4  # sent, received, started, succeeded


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as server:
        yield server


def _stored_events(store: Store, task_ids: list[str]) -> int:
    total = 0
    for task_id in task_ids:
        detail = store.get_task(task_id)
        total += len(detail.events) if detail is not None else 0
    return total


def _run_outage(redis_url: str, private: PrivateRedis, prefix: str, tmp_path: Path, kind: str) -> None:
    store = open_store(f"sqlite:///{tmp_path}/flow.db")
    consumer = Consumer(private.url, store, prefix=prefix, batch=200, read_timeout=0.2, max_backoff=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # Heartbeats off for the duration: only the burst's task events may be fired during the outage.
        with tracked_worker(redis_url, private.url, prefix, buffer_size=BUFFER, heartbeat_interval=3600) as t:
            publisher = trackers[id(t.app)].publisher
            wait_for(lambda: store.workers(), 30, "worker.online to be stored")
            assert publisher.dropped_total == 0

            if kind == "frozen":
                private.signal(signal.SIGSTOP)
            else:
                private.kill()
            try:
                add = t.task("add")
                results = [add.delay(i, 1) for i in range(BURST)]
                # Every task finishes while Redis is still frozen/down: nothing waited on it.
                assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(BURST)]
            finally:
                if kind == "frozen":
                    private.signal(signal.SIGCONT)
                else:
                    private.start()
            ids = [r.id for r in results]
            fired = BURST * EVENTS_PER_TASK
            assert publisher.dropped_total > 0, "the buffer never overflowed: the test proves nothing"

            # After recovery: the kept events arrive and the drops are reported (the publisher flushes,
            # then a sentinel task's events trail everything in the stream).
            assert publisher.flush(30), "the publisher did not drain after recovery"
            wait_for(lambda: publisher.dropped_unreported == 0, 30, "the drop report to be published")
            sentinel = t.task("add").delay(1000, 1)
            assert sentinel.get(timeout=30) == 1001
            wait_for(lambda: (d := store.get_task(sentinel.id)) is not None and d.state == "SUCCESS",
                     30, "the sentinel task to be stored")  # fmt: skip
            assert publisher.flush(10)
            wait_for(lambda: consumer.stats()["lag"] == 0 or consumer.stats()["lag"] is None, 10, "lag 0")

            stored = _stored_events(store, ids)
            dropped_counted = store.stats().counters.get("publisher.dropped", 0)
            details: dict[str, Any] = {
                "fired": fired,
                "stored": stored,
                "consumer_counted_dropped": dropped_counted,
                "publisher_dropped_total": publisher.dropped_total,
                "publisher_dropped_unconfirmed": publisher.dropped_unconfirmed,
            }
            assert stored > 0, details  # what the buffer kept did arrive
            assert stored + publisher.dropped_total == fired, details  # the books balance exactly
            # Every drop was reported. A report written but never answered (Redis slower than the
            # socket timeout) may or may not have been counted: the publisher says which drops those are.
            reported = {publisher.dropped_total, publisher.dropped_total - publisher.dropped_unconfirmed}
            assert dropped_counted in reported, details
    finally:
        stop.set()
        thread.join(15)
        store.close()


def test_frozen_redis_kept_events_arrive_and_drop_count_is_exact(
    redis_url: str, private_redis: PrivateRedis, unique_prefix: str, tmp_path: Path
) -> None:
    _run_outage(redis_url, private_redis, unique_prefix, tmp_path, "frozen")


def test_killed_redis_kept_events_arrive_and_drop_count_is_exact(
    redis_url: str, private_redis: PrivateRedis, unique_prefix: str, tmp_path: Path
) -> None:
    _run_outage(redis_url, private_redis, unique_prefix, tmp_path, "killed")


def test_a_publish_to_a_frozen_redis_may_have_been_stored_one_to_a_dead_redis_was_not(
    private_redis: PrivateRedis, unique_prefix: str
) -> None:
    """A frozen server keeps what was written to it in its socket and runs it when it resumes, so the
    transport must not call that write failed (the publisher would count its events as dropped); a
    server that is gone got nothing, and the publisher may drop and count."""
    transport = RedisTransport(private_redis.url, prefix=unique_prefix)
    client = redis.Redis(port=private_redis.port, socket_timeout=5)
    try:
        transport.publish([b'{"n":0}'])
        private_redis.signal(signal.SIGSTOP)
        try:
            with pytest.raises(DeliveryUnknown):
                transport.publish([b'{"n":1}', b'{"n":2}'])
        finally:
            private_redis.signal(signal.SIGCONT)
        entries = wait_for(lambda: (e := client.xrange(stream_key(unique_prefix))) and len(e) == 2 and e, 10)
        assert entries[1][1] == {b"b": b'{"n":1}\n{"n":2}'}  # stored after all

        client.close()
        private_redis.kill()
        with pytest.raises(TransportError) as failed:
            transport.publish([b'{"n":3}'])
        assert not isinstance(failed.value, DeliveryUnknown)
    finally:
        transport.close()
        client.close()
