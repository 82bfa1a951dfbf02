"""A chord of any size as the events a tracked worker would send (tests/integration/test_big_flows.py,
bench/bigflow.py): root -> chord of `members` header tasks -> callback.

Each member is sent, started and succeeds (failed ones fail, every 97th is retried once first), with
runtimes and queue waits spread so percentiles and the slowest-first order mean something.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from celery_flow.events import Event

HOST = {"hostname": "celery@big", "pid": 4242}


@dataclass
class BigChord:
    root_id: str
    group_id: str
    callback_id: str
    members: int
    failed: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    # The events, generated on demand (a 500,000-member chord is 1.5 million events).
    t0: float = 0.0
    fail_every: int = 0

    def events(self) -> Iterator[Event]:
        """Every event of the flow, root first, callback last."""
        yield from _task(self.root_id, "big.start", self.root_id, None, self.t0, 0.01)
        for i in range(self.members):
            task_id = _member_id(self.group_id, i)
            t = self.t0 + 0.1 + i * 0.0001
            runtime = 0.001 + (i * 7919 % 1000) / 1000.0  # 1 ms .. 1 s, scattered over the members
            fail = self.fail_every > 0 and i % self.fail_every == self.fail_every // 2
            retry = not fail and i % 97 == 13
            yield from _task(task_id, "big.fetch", self.root_id, self.root_id, t, runtime, fail=fail,
                             retry=retry, group_id=self.group_id, chord_id=self.callback_id)  # fmt: skip
        end = self.t0 + 0.1 + self.members * 0.0001 + 1.1
        yield from _task(self.callback_id, "big.merge", self.root_id, self.root_id, end, 0.02)


def _member_id(group_id: str, i: int) -> str:
    return uuid.uuid5(uuid.NAMESPACE_OID, f"{group_id}:{i}").hex


def big_chord(members: int, fail_every: int = 0, t0: float = 1_700_000_000.0) -> BigChord:
    """A chord of `members` header tasks; every `fail_every`-th fails (0: none fail)."""
    chord = BigChord(
        uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex, members, t0=t0, fail_every=fail_every
    )
    for i in range(members):
        if fail_every and i % fail_every == fail_every // 2:
            chord.failed.append(_member_id(chord.group_id, i))
        elif i % 97 == 13:
            chord.retried.append(_member_id(chord.group_id, i))
    return chord


def _task(
    task_id: str,
    name: str,
    root: str,
    parent: str | None,
    t: float,
    runtime: float,
    fail: bool = False,
    retry: bool = False,
    **lineage: Any,
) -> list[Event]:
    def ev(type_: str, ts: float, **fields: Any) -> Event:
        return Event(v=1, id=uuid.uuid4().hex, type=type_, ts=ts, task_id=task_id, name=name, root_id=root,  # type: ignore[arg-type]
                     parent_id=parent, **fields)  # fmt: skip

    wait = (runtime * 13) % 0.05
    out = [ev("sent", t, queue="celery", retries=0, args=[1], kwargs={}, **lineage)]
    start = t + wait
    if retry:
        out.append(ev("started", start, retries=0, **HOST))
        out.append(ev("retried", start + 0.001, retries=0, exception="TimeoutError('slow upstream')", **HOST))
        start += 0.01
    attempt = 1 if retry else 0
    out.append(ev("started", start, retries=attempt, **HOST))
    if fail:
        tb = "Traceback (most recent call last):\nValueError: bad row"
        out.append(ev("failed", start + runtime, runtime=runtime, retries=attempt,
                      exception="ValueError('bad row')", traceback=tb, **HOST))  # fmt: skip
    else:
        out.append(ev("succeeded", start + runtime, runtime=runtime, result=1, retries=attempt, **HOST))
    return out


# -- one 100,000-member chord per test session, folded from the real Redis stream ------------------

BIG_MEMBERS = 100_000
# Every 1,000th member fails: 100 failures, all of which the graph must list.
BIG_FAIL_EVERY = 1000


@dataclass
class FoldedFlow:
    store_url: str
    chord: BigChord
    fold_seconds: float


@pytest.fixture(scope="session")
def big_flow(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> FoldedFlow:
    """A 100,000-member chord published to a Redis stream and folded by a real `celery-flow consume`
    into a SQLite store, once per session (the graph, paging and browser tests share it)."""
    from celery_flow.events import encode
    from celery_flow.store import open_store
    from celery_flow.transport import from_url
    from tests.support.server_helpers import cli_env, cli_process
    from tests.support.wait import wait_for

    folder = tmp_path_factory.mktemp("bigflow")
    store_url = f"sqlite:///{folder / 'big.db'}"
    prefix = f"cft_big_{uuid.uuid4().hex[:8]}"
    # Recent (retention keeps it) and published faster than folded: the stream must hold it all.
    chord = big_chord(BIG_MEMBERS, fail_every=BIG_FAIL_EVERY, t0=time.time() - 600)
    log = folder / "consume.log"
    transport = from_url(redis_url, prefix=prefix, maxlen=10 * BIG_MEMBERS)
    args = ("consume", "--broker-url", redis_url, "--store", store_url, "--prefix", prefix, "--batch", "1000")
    started = time.perf_counter()
    try:
        with cli_process(*args, log=log, env=cli_env(CELERY_FLOW_TTL="0")):
            wait_for(lambda: "consumer running" in log.read_text(), 30, "consume to start")
            total = 0
            batch: list[bytes] = []
            for event in chord.events():
                batch.append(encode(event))
                if len(batch) == 1000:
                    transport.publish(batch)
                    total += len(batch)
                    batch = []
            transport.publish(batch)
            total += len(batch)
            store = open_store(store_url)
            try:
                wait_for(lambda: store.stats().events == total, 600, f"{total:,} events folded")
            finally:
                store.close()
    finally:
        transport.close()
        client = redis.Redis.from_url(redis_url)
        client.delete(f"{prefix}:events")
        client.close()
    return FoldedFlow(store_url, chord, time.perf_counter() - started)
