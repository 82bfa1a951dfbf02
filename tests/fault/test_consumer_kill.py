"""`celery-flow consume` SIGKILLed in the middle of a batch, twice in a row, on SQLite and PostgreSQL.

What a user must never see after their consumer was OOM-killed (twice) while a backlog was draining: a
task missing from the UI, a task whose events appear twice, or entries stuck unacknowledged in the stream.

The consumer acknowledges only after the store committed, and re-reads its own pending entries when it
comes back under the same `--name` (a systemd unit or a k8s StatefulSet pod keeps its name); `apply()` is
idempotent per event id. A kill counts as "mid-batch" when the group still holds entries the dead
consumer had read but not acknowledged; the test insists on two such kills in a row.
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
import redis

from celery_flow.events import Event, encode
from celery_flow.store import open_store
from celery_flow.store.base import Store, TaskFilter
from celery_flow.transport import from_url
from tests.support.events import event
from tests.support.postgres import own_database
from tests.support.server_helpers import start_cli, stop_process
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

TASKS = 2500  # x 4 events: a backlog that takes the consumer a few seconds to drain
GROUP = "celery_flow"
NAME = "consumer-under-test"


def _task_events(task_id: str, i: int) -> list[Event]:
    base = 1_700_000_000.0 + i * 0.001
    common: dict[str, Any] = {"name": f"app.tasks.t{i % 7}", "root_id": task_id}
    worker: dict[str, Any] = {"hostname": "celery@a", "pid": 7}

    return [
        event("sent", task_id, base, args=[i], queue="celery", **common),
        event("received", task_id, base + 0.001, hostname="celery@a", **common),
        event("started", task_id, base + 0.002, **common, **worker),
        event("succeeded", task_id, base + 0.003, runtime=0.001, result=i, **common, **worker),
    ]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/kill.db"
        return
    pg_url: str = request.getfixturevalue("pg_url")
    # A schema of its own inside the run's database would need search_path games: a database is simpler.
    with own_database(pg_url.rpartition("/")[0], f"cf_kill_{uuid.uuid4().hex[:8]}") as url:
        yield url


def assert_every_task_stored_once(store: Store, task_ids: list[str]) -> None:
    """The store holds exactly these tasks, each SUCCESS, a sample of them with exactly their 4 events."""
    assert store.stats().tasks == len(task_ids)
    seen: set[str] = set()
    cursor: str | None = None
    while True:
        page = store.list_tasks(TaskFilter(), 500, cursor)
        for item in page.items:
            assert item.state == "SUCCESS", item
            seen.add(item.task_id)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == set(task_ids)
    for task_id in task_ids[:: max(1, len(task_ids) // 50)]:
        detail = store.get_task(task_id)
        assert detail is not None
        assert sorted(e.type for e in detail.events) == ["received", "sent", "started", "succeeded"]


def _start_consumer(redis_url: str, store_url: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    return start_cli("consume", "--broker-url", redis_url, "--store", store_url, "--prefix", prefix,
                     "--name", NAME, "--batch", "200", "--ttl", "0", "--log-level", "warning",
                     log=log, append=True)  # fmt: skip


def _pending(client: redis.Redis, stream: str) -> int:
    info = client.xpending(stream, GROUP)
    return int(info["pending"])


def _events_stored(store: Store) -> int:
    return store.stats().events


def test_consumer_sigkilled_twice_mid_batch_loses_and_doubles_nothing(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, store_url: str, tmp_path: Path
) -> None:
    stream = f"{unique_prefix}:events"
    task_ids = [uuid.uuid4().hex for _ in range(TASKS)]
    events = [e for i, t in enumerate(task_ids) for e in _task_events(t, i)]
    transport = from_url(redis_url, prefix=unique_prefix)
    store = open_store(store_url)
    log = tmp_path / "consume.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # The group must exist before the backlog is written, as it does when a server ran before.
        redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        for i in range(0, len(events), 1000):
            transport.publish([encode(e) for e in events[i : i + 1000]])

        mid_batch_kills = 0
        attempts = 0
        while mid_batch_kills < 2:
            attempts += 1
            assert attempts <= 8, (
                f"could not kill the consumer with entries in flight; log:\n{log.read_text()}"
            )
            before = _events_stored(store)
            assert before < len(events), "the backlog drained before two mid-batch kills: make it larger"
            proc = _start_consumer(redis_url, store_url, unique_prefix, log)
            procs.append(proc)
            # Kill it once it is demonstrably working through the backlog (more events than before).
            target = before + 400
            try:
                wait_for(lambda p=proc, n=target: _events_stored(store) >= n or p.poll() is not None,  # type: ignore[misc]
                         60, "the consumer to make progress")  # fmt: skip
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}; stored {_events_stored(store)}, log:\n{log.read_text()}"
                ) from None
            assert proc.poll() is None, f"consumer exited by itself:\n{log.read_text()}"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            in_flight = _pending(redis_client, stream)
            if in_flight > 0:
                mid_batch_kills += 1  # it died holding entries read but not acknowledged
            else:
                mid_batch_kills = 0  # "twice in a row" means two consecutive mid-batch kills

        # Third life: it must pick up its own pending entries and drain the rest.
        final = _start_consumer(redis_url, store_url, unique_prefix, log)
        procs.append(final)
        try:
            wait_for(lambda: _events_stored(store) >= len(events) and _pending(redis_client, stream) == 0,
                     90, "the backlog to be stored and acknowledged")  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}; stored {_events_stored(store)}/{len(events)}, pending "
                f"{_pending(redis_client, stream)}, log:\n{log.read_text()}"
            ) from None

        # Nothing doubled: the store holds each event exactly once and each task exactly its 4 events.
        assert _events_stored(store) == len(events)
        assert_every_task_stored_once(store, task_ids)
        # Every entry acknowledged, and the consumer counted no rejects for redelivered entries.
        assert _pending(redis_client, stream) == 0
        assert not {k: v for k, v in store.stats().counters.items() if k.startswith("rejected.")}
        assert final.poll() is None, "the consumer died after recovery"
    finally:
        for proc in procs:
            stop_process(proc)
        transport.close()
        store.close()
        redis_client.delete(stream)
