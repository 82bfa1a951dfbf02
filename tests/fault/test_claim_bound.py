"""A SIGKILLed consumer's events are folded by another consumer within 15 s (docs/deployment.md).

The promise users plan around (a server OOM-killed or its node gone): the entries (Redis) or messages
(SQS) the dead consumer had read but not acknowledged reach the store within 15 s of its death, taken
over by a live member of the group or by the next consumer to start under another name (a new pod).
The deadline is the product's bound plus a margin for a loaded machine, not a measure of speed; before
the bound was 15 s, a dead member's entries waited 60 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from celery_flow.events import encode
from celery_flow.store import open_store
from celery_flow.transport import from_url
from tests.fault.test_consumer_kill import GROUP, _task_events
from tests.fault.test_sqs_faults import _queue_counts
from tests.support.server_helpers import start_cli, stop_process
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(180)

TASKS = 2500  # x 4 events: a backlog the first consumer is still working through when it is killed
BOUND = 15.0
MARGIN = 10.0  # the machine may be loaded; the bound itself is not relaxed by it


def _consume(url: str, store_url: str, prefix: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    return start_cli("consume", "--broker-url", url, "--store", store_url, "--prefix", prefix,
                     "--name", name, "--batch", "200", "--ttl", "0", "--log-level", "warning",
                     log=log, append=True)  # fmt: skip


def _kill_when(proc: subprocess.Popen[bytes], busy: Callable[[], bool], log: Path) -> float:
    """SIGKILL `proc` as soon as `busy()` holds; the monotonic time of its death."""
    wait_for(lambda: busy() or proc.poll() is not None, 60, "the consumer to get busy")
    assert proc.poll() is None, f"consumer exited by itself:\n{log.read_text()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    return time.monotonic()


def _held_by(client: redis.Redis, stream: str, name: str) -> set[bytes]:
    rows = client.xpending_range(stream, GROUP, min="-", max="+", count=10_000, consumername=name)
    return {bytes(row["message_id"]) for row in rows}


def _still_pending(client: redis.Redis, stream: str, ids: set[bytes]) -> set[bytes]:
    rows = client.xpending_range(stream, GROUP, min="-", max="+", count=100_000)
    return ids & {bytes(row["message_id"]) for row in rows}


def _joined(client: redis.Redis, stream: str, name: str) -> bool:
    """Whether consumer `name` has read from the group (so it is waiting for the next entries)."""
    return any(c["name"] in (name, name.encode()) for c in client.xinfo_consumers(stream, GROUP))


@pytest.mark.parametrize("taker", ["live peer", "next to start"])
def test_redis_entries_of_a_killed_consumer_are_folded_within_15s(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path, taker: str
) -> None:
    stream = f"{unique_prefix}:events"
    transport = from_url(redis_url, prefix=unique_prefix)
    store_url = f"sqlite:///{tmp_path}/bound.db"
    store = open_store(store_url)
    log = tmp_path / "consume.log"
    procs: list[subprocess.Popen[bytes]] = []
    published = 0
    try:
        redis_client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        if taker == "live peer":
            procs.append(_consume(redis_url, store_url, unique_prefix, "peer", log))
            wait_for(lambda: _joined(redis_client, stream, "peer"), 60, "the peer to join the group")
        held: set[bytes] = set()
        for attempt in range(8):  # a kill between two batches holds nothing: try again
            # The backlog goes out once every consumer waits on the stream, so they share it.
            name = f"doomed{attempt}"
            doomed = _consume(redis_url, store_url, unique_prefix, name, log)
            procs.append(doomed)
            wait_for(lambda n=name: _joined(redis_client, stream, n), 60, f"{name} to join the group")
            events = [e for i in range(TASKS) for e in _task_events(uuid.uuid4().hex, i)]
            for i in range(0, len(events), 1000):
                transport.publish([encode(e) for e in events[i : i + 1000]])
            published += len(events)
            died = _kill_when(doomed, lambda n=name: bool(_held_by(redis_client, stream, n)), log)
            held = _held_by(redis_client, stream, name)
            if held:
                break
        assert held, "the consumer never died holding entries: kill it mid-batch"
        if taker == "next to start":
            procs.append(_consume(redis_url, store_url, unique_prefix, "successor", log))

        # Acknowledged means committed first (the consumer acks after the store's commit).
        wait_for(lambda: not _still_pending(redis_client, stream, held), BOUND + MARGIN,
                 "the dead consumer's entries to be folded and acknowledged")  # fmt: skip
        assert time.monotonic() - died <= BOUND + MARGIN
        wait_for(lambda: store.stats().events >= published, 90, "the whole backlog to be stored")
        assert store.stats().events == published  # nothing lost, nothing doubled
        assert store.stats().tasks == published // 4
    finally:
        for proc in procs:
            stop_process(proc)
        transport.close()
        store.close()


@pytest.mark.slow
def test_sqs_messages_of_a_killed_consumer_are_folded_within_15s(
    sqs_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    events = [e for i in range(TASKS) for e in _task_events(uuid.uuid4().hex, i)]
    transport = from_url(sqs_url, prefix=unique_prefix)  # the default visibility timeout
    store_url = f"sqlite:///{tmp_path}/bound.db"
    store = open_store(store_url)
    log = tmp_path / "consume.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(0, len(events), 1000):
            transport.publish([encode(e) for e in events[i : i + 1000]])
        doomed = _consume(sqs_url, store_url, unique_prefix, "doomed", log)
        procs.append(doomed)
        target = store.stats().events + 400
        died = _kill_when(doomed, lambda: store.stats().events >= target, log)
        assert _queue_counts(sqs_url, unique_prefix)[1] > 0, "the consumer died holding nothing"
        procs.append(_consume(sqs_url, store_url, unique_prefix, "successor", log))
        # What the dead one held is invisible until its timeout ends, so this needs the bound to hold.
        wait_for(lambda: store.stats().events >= len(events) and _queue_counts(sqs_url, unique_prefix)
                 == (0, 0), BOUND + MARGIN, "every message to be folded and deleted")  # fmt: skip
        assert time.monotonic() - died <= BOUND + MARGIN
        assert store.stats().events == len(events)
        assert store.stats().tasks == TASKS
    finally:
        for proc in procs:
            stop_process(proc)
        transport.close()
        store.close()
