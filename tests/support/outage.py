"""A burst of real tasks while celery-flow's broker is out, and the books checked afterwards.

What an operator reads after the outage, end to end through the real consumer and store:

    events stored for the burst's tasks + events the publisher dropped == events fired

and the consumer counted every reported drop. Too high means an event both delivered and counted
dropped, too low one silently lost. The burst's tasks must all succeed during the outage (Celery's own
broker is the test Redis, not the one that is out): nothing waits on celery-flow's broker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from celery_flow.consumer import Consumer
from celery_flow.store import open_store
from celery_flow.tracking.hooks import trackers
from celery_flow.tracking.publisher import Publisher
from tests.support.wait import wait_for
from tests.support.worker import tracked_worker

__all__ = ["BUFFER", "BURST", "EVENTS_PER_TASK", "check_books_after_outage"]

BURST = 150  # tasks; x4 events against a 100-event buffer: most are dropped, some are kept
BUFFER = 100
EVENTS_PER_TASK = 4  # sent, received, started, succeeded


def check_books_after_outage(
    celery_broker: str,
    publish_url: str,
    consume_url: str,
    prefix: str,
    tmp_path: Path,
    outage: Callable[[], AbstractContextManager[object]],
    during: Callable[[Publisher], None] = lambda _publisher: None,
) -> None:
    """Run BURST tasks inside `outage()` (workers publish to `publish_url`, the consumer reads
    `consume_url`), call `during` before the outage ends, then assert the books balance exactly."""
    store = open_store(f"sqlite:///{tmp_path}/flow.db")
    consumer = Consumer(consume_url, store, prefix=prefix, batch=200, read_timeout=0.2, max_backoff=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        # Heartbeats off for the duration: only the burst's task events may be fired during the outage.
        with tracked_worker(
            celery_broker, publish_url, prefix, buffer_size=BUFFER, heartbeat_interval=3600
        ) as t:
            publisher = trackers[id(t.app)].publisher
            wait_for(lambda: store.workers(), 30, "worker.online to be stored")
            assert publisher.dropped_total == 0

            with outage():
                add = t.task("add")
                results = [add.delay(i, 1) for i in range(BURST)]
                assert [r.get(timeout=60) for r in results] == [i + 1 for i in range(BURST)]
                during(publisher)
            fired = BURST * EVENTS_PER_TASK
            assert publisher.dropped_total > 0, "the buffer never overflowed: the test proves nothing"

            # After recovery: the kept events arrive and the drops are reported (the publisher flushes,
            # then a sentinel task's events trail everything in the broker).
            assert publisher.flush(30), "the publisher did not drain after recovery"
            wait_for(lambda: publisher.dropped_unreported == 0, 30, "the drop report to be published")
            sentinel = add.delay(1000, 1)
            assert sentinel.get(timeout=30) == 1001
            wait_for(lambda: (d := store.get_task(sentinel.id)) is not None and d.state == "SUCCESS",
                     30, "the sentinel task to be stored")  # fmt: skip
            assert publisher.flush(10)
            wait_for(lambda: consumer.stats()["lag"] in (0, None), 10, "the broker to be drained")

            stored = 0
            for result in results:
                detail = store.get_task(result.id)
                stored += len(detail.events) if detail is not None else 0
            details: dict[str, Any] = {
                "fired": fired,
                "stored": stored,
                "consumer_counted_dropped": store.stats().counters.get("publisher.dropped", 0),
                "publisher_dropped_total": publisher.dropped_total,
                "publisher_dropped_unconfirmed": publisher.dropped_unconfirmed,
            }
            assert stored > 0, details  # what the buffer kept did arrive
            assert stored + publisher.dropped_total == fired, details  # the books balance exactly
            # Every drop was reported. A report written but never answered (the broker slower than the
            # socket timeout) may or may not have been counted: the publisher says which drops those are.
            reported = {publisher.dropped_total, publisher.dropped_total - publisher.dropped_unconfirmed}
            assert details["consumer_counted_dropped"] in reported, details
    finally:
        stop.set()
        thread.join(15)
        store.close()
