"""SQS faults end to end (moto in server mode): a `celery-flow consume` SIGKILLed mid-batch twice in a row
loses and doubles nothing, and a frozen (SIGSTOP) SQS endpoint never slows a task or apply_async.

Mirrors tests/fault/test_consumer_kill.py (Redis) and tests/fault/test_publisher_faults.py (Redis), with
Celery itself on SQS: what a Celery-on-SQS user runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

import celery_flow
from celery_flow.events import encode
from celery_flow.store import open_store
from celery_flow.store.base import Store
from celery_flow.tracking.hooks import tracker_for_app
from celery_flow.transport import from_url
from tests.fault.test_consumer_kill import _task_events, assert_every_task_stored_once
from tests.fault.test_publisher_faults import EXTRA_LATENCY, timed_publishes
from tests.support.canvas_app import make_app
from tests.support.events import EventLog
from tests.support.moto_server import CELERY_SQS_OPTIONS, MotoServer, admin_client
from tests.support.server_helpers import start_cli, stop_process
from tests.support.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

TASKS = 2500  # x 4 events, 40 messages of 256: a backlog that takes the consumer a few seconds to drain
NAME = "consumer-under-test"
# Short, so the killed consumers' messages come back within the test; long enough for a batch's commit.
VISIBILITY = 3


def _queue_counts(sqs_url: str, prefix: str) -> tuple[int, int]:
    """(messages waiting, messages received and not deleted) in the events queue."""
    admin = admin_client(sqs_url)
    url = admin.get_queue_url(QueueName=f"{prefix}-events")["QueueUrl"]
    attrs = admin.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _start_consumer(flow_url: str, store_url: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    return start_cli("consume", "--broker-url", flow_url, "--store", store_url, "--prefix", prefix,
                     "--name", NAME, "--batch", "200", "--ttl", "0", "--log-level", "warning",
                     log=log, append=True)  # fmt: skip


def test_consumer_sigkilled_twice_mid_batch_loses_and_doubles_nothing(
    sqs_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    flow_url = f"{sqs_url}?visibility_timeout={VISIBILITY}"
    task_ids = [uuid.uuid4().hex for _ in range(TASKS)]
    events = [e for i, t in enumerate(task_ids) for e in _task_events(t, i)]
    transport = from_url(flow_url, prefix=unique_prefix)
    store: Store = open_store(f"sqlite:///{tmp_path}/kill.db")
    log = tmp_path / "consume.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(0, len(events), 1000):
            transport.publish([encode(e) for e in events[i : i + 1000]])

        mid_batch_kills = attempts = 0
        while mid_batch_kills < 2:
            attempts += 1
            assert attempts <= 8, (
                f"could not kill the consumer with messages in flight; log:\n{log.read_text()}"
            )
            before = store.stats().events
            assert before < len(events), "the backlog drained before two mid-batch kills: make it larger"
            proc = _start_consumer(flow_url, f"sqlite:///{tmp_path}/kill.db", unique_prefix, log)
            procs.append(proc)
            target = before + 400  # kill it once it is demonstrably working through the backlog
            wait_for(lambda p=proc, n=target: store.stats().events >= n or p.poll() is not None,  # type: ignore[misc]
                     60, "the consumer to make progress")  # fmt: skip
            assert proc.poll() is None, f"consumer exited by itself:\n{log.read_text()}"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            in_flight = _queue_counts(sqs_url, unique_prefix)[1]
            # It died holding messages received but not deleted; "twice in a row" means consecutive kills.
            mid_batch_kills = mid_batch_kills + 1 if in_flight > 0 else 0

        # Third life: the dead consumers' messages come back after their visibility timeout.
        final = _start_consumer(flow_url, f"sqlite:///{tmp_path}/kill.db", unique_prefix, log)
        procs.append(final)
        try:
            wait_for(lambda: store.stats().events >= len(events) and _queue_counts(sqs_url, unique_prefix)
                     == (0, 0), 90, "the backlog to be stored and deleted")  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; stored {store.stats().events}/{len(events)}, queue "
                f"{_queue_counts(sqs_url, unique_prefix)}, log:\n{log.read_text()}"
            ) from None

        # Nothing doubled: each event once, each task exactly its 4 events, all succeeded.
        assert store.stats().events == len(events)
        assert_every_task_stored_once(store, task_ids)
        assert not {k: v for k, v in store.stats().counters.items() if k.startswith("rejected.")}
        assert final.poll() is None, "the consumer died after recovery"
    finally:
        for proc in procs:
            stop_process(proc)
        transport.close()
        store.close()


@pytest.fixture
def private_sqs() -> Iterator[MotoServer]:
    """celery-flow's own SQS endpoint, which the test freezes; Celery's broker stays on `sqs_url`."""
    with MotoServer() as server:
        yield server


def _sqs_app(
    sqs_url: str, redis_url: str, flow_url: str | None, prefix: str, main: str, **options: Any
) -> Any:
    app = make_app(sqs_url, redis_url, None, None, main=main, queue=f"q_{main}_{prefix}")
    app.conf.broker_transport_options = CELERY_SQS_OPTIONS
    if flow_url is not None:
        celery_flow.init(app, transport_url=flow_url, prefix=prefix, **options)
    return app


def test_frozen_sqs_never_slows_tasks_and_publisher_recovers(
    sqs_url: str, redis_url: str, private_sqs: MotoServer, unique_prefix: str
) -> None:
    plain = _sqs_app(sqs_url, redis_url, None, unique_prefix, "plain")
    app = _sqs_app(sqs_url, redis_url, private_sqs.url, unique_prefix, "tracked", buffer_size=200)
    log = EventLog(private_sqs.url, unique_prefix)
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="ERROR",
                          shutdown_timeout=10):  # fmt: skip
            log.wait_for(lambda ev: any(e.type == "worker.online" for e in ev), timeout=30)
            baseline, _ = timed_publishes(plain, 200)

            private_sqs.signal(signal.SIGSTOP)
            try:
                frozen, ids = timed_publishes(app, 200)
                results = [app.AsyncResult(i).get(timeout=60) for i in ids]
            finally:
                private_sqs.signal(signal.SIGCONT)
            assert results == [i + 1 for i in range(200)]  # every task succeeded
            print(
                f"apply_async max: {max(frozen) * 1e3:.1f} ms with SQS frozen, "
                f"{max(baseline) * 1e3:.1f} ms plain (Celery on SQS both times)"
            )
            assert max(frozen) <= max(baseline) + EXTRA_LATENCY, (max(frozen), max(baseline))

            # SQS is back: new events flow and every drop is reported.
            publisher = tracker_for_app(app).publisher  # type: ignore[union-attr]
            after = app.tasks["t.add"].delay(1000, 1)
            assert after.get(timeout=20) == 1001
            events = log.wait_drops_reported(after.id, publisher.dropped_total, 60)
        dropped = sum(e.dropped or 0 for e in events if e.type == "publisher.dropped")
        assert dropped > 0
        # 200 tasks x 4 events with a 200-event buffer: what arrived plus what was reported covers them all
        delivered = {(e.task_id, e.type) for e in events if e.task_id in set(ids)}
        assert len(delivered) + dropped >= 200 * 4
    finally:
        celery_flow.shutdown(app)
        log.close()
