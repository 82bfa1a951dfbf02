"""Property: whatever lands in the stream, the consumer survives, counts the junk and folds the rest exactly.

Stream entries are drawn from: random bytes, random JSON documents, near-valid events (a valid event with
one field of the wrong type, a required field missing, an absurd value, an unsupported version, an
unknown type), and valid events of a few tasks, shuffled and duplicated (out of order, re-delivered).
Through the real `Consumer` and a real SQLite store (and, in the second test, a real Redis stream):

- nothing raises, however many batches the entries are split into;
- every invalid entry is counted as rejected under a known kind, nothing else is;
- every task's stored state equals `fold_task` over that task's valid events: arrival order, batching and
  duplicates change nothing.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celery_flow.consumer import Consumer
from celery_flow.events import MAX_EVENT_BYTES, Event, decode, encode
from celery_flow.flow.fold import fold_task
from celery_flow.store import open_store
from celery_flow.store.base import Store
from celery_flow.transport.base import Message
from tests.support.events import event
from tests.support.postgres import own_database
from tests.support.wait import wait_for

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
KNOWN_KINDS = {"not_json", "not_utf8", "missing_field", "invalid_field", "unsupported_version", "oversize"}
TASK_TYPES = ["sent", "received", "started", "retried", "succeeded", "failed", "revoked", "rejected"]

text = st.text(max_size=40)  # any unicode, surrogates excluded by default, NULs and RTL marks included
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def task_events(draw: st.DrawFn) -> list[Event]:
    """Events of one task: random types and attempts, consistent identity, unicode everywhere."""
    task_id = draw(
        st.sampled_from([uuid.uuid4().hex, "ü-" + uuid.uuid4().hex[:6], "<script>" + uuid.uuid4().hex])
    )
    name = draw(st.text(min_size=1, max_size=30) | st.just("n" * 600))  # over-long texts get clipped
    trace = draw(st.none() | st.text(max_size=10) | st.just("t" * 300))
    root = draw(st.none() | st.just(task_id) | st.just("root-" + task_id[:6]))
    out = []
    for _ in range(draw(st.integers(1, 6))):
        type_ = draw(st.sampled_from(TASK_TYPES))
        out.append(
            event(
                type_,
                task_id,
                draw(st.floats(1_600_000_000, 1_900_000_000)),
                name=draw(st.none() | st.just(name)),
                root_id=root,
                retries=draw(st.integers(0, 3)),
                hostname=draw(st.none() | st.sampled_from(["celery@a", "celery@ü", "w", "h" * 600])),
                trace_id=trace,
                pid=draw(st.none() | st.integers(1, 2**31)),
                args=draw(st.none() | json_values),
                result=draw(st.none() | json_values),
                exception=draw(st.none() | text),
                runtime=draw(st.none() | st.floats(0, 1e6)),
                links=draw(st.none() | st.lists(st.sampled_from(["l1", "l2", task_id]), max_size=2)),
            )
        )
    return out


def _valid_dict(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "v": 1,
        "id": uuid.uuid4().hex,
        "type": draw(st.sampled_from(TASK_TYPES)),
        "ts": 1_700_000_000.5,
        "task_id": "near-" + uuid.uuid4().hex[:8],
        "name": "app.near",
    }


@st.composite
def near_valid(draw: st.DrawFn) -> bytes:
    """A valid event with exactly one thing wrong: each variant is invalid by construction."""
    doc = _valid_dict(draw)
    variant = draw(st.integers(0, 8))
    if variant == 0:  # a required field missing
        del doc[draw(st.sampled_from(["v", "id", "type", "ts"]))]
    elif variant == 1:  # a field of the wrong type
        field, bad = draw(
            st.sampled_from(
                [
                    ("ts", "noon"),
                    ("retries", "3"),
                    ("pid", "x"),
                    ("links", 5),
                    ("task_id", 12),
                    ("id", None),
                    ("args", None),
                    ("name", ["a"]),
                    ("runtime", {"s": 1}),
                    ("tasks", "all"),
                ]
            )
        )
        if field == "args":  # args may be anything: make that one invalid another way
            field, bad = "v", "1"
        doc[field] = bad
    elif variant == 2:  # absurd sizes: an int beyond 64 bits
        doc[draw(st.sampled_from(["retries", "pid"]))] = 2**80
    elif variant == 3:
        doc["v"] = draw(st.integers(2, 10**6) | st.integers(-(10**6), 0))
    elif variant == 4:
        doc["type"] = draw(
            st.text(max_size=20).filter(lambda t: t not in TASK_TYPES and not t.startswith("w"))
        )
    elif variant == 5:  # a task event without its task
        del doc["task_id"]
    elif variant == 8:  # an id no Celery ever made (and PostgreSQL could not index)
        doc[draw(st.sampled_from(["id", "task_id"]))] = "x" * 256
    elif variant == 6:  # truncated in transit
        raw = json.dumps(doc).encode()
        return raw[: draw(st.integers(0, len(raw) - 1))]
    else:  # not UTF-8 inside an otherwise valid document
        return json.dumps(doc).encode().replace(b"app.near", b"app.\xff\xfe")
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


junk = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid(),
    st.just(b""),
    st.just(b"x" * (MAX_EVENT_BYTES + 1)),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], list[Event], int]:
    """(entries in arrival order, the valid events among them, how many entries are invalid)."""
    valid = [e for events in draw(st.lists(task_events(), min_size=1, max_size=5)) for e in events]
    bad = draw(st.lists(junk, max_size=25))
    entries: list[tuple[bool, bytes]] = [(True, encode(e)) for e in valid] + [(False, b) for b in bad]
    # Re-deliveries: some entries appear twice.
    entries += draw(st.lists(st.sampled_from(entries), max_size=8))
    shuffled = draw(st.permutations(entries))
    return [raw for _, raw in shuffled], valid, sum(1 for ok, _ in shuffled if not ok)


def _comparable(detail: Any) -> dict[str, Any]:
    data = dataclasses.asdict(detail)
    # What the store adds from other tasks, not from this task's events: its children, its cluster's size,
    # and whether it runs far longer than its name's other runs (stuck).
    data.pop("children", None)
    data.pop("cluster_size", None)
    data.pop("stuck", None)
    return data


def _check(store: Store, consumer: Consumer, valid: list[Event], invalid: int, fresh: bool = True) -> None:
    stats = consumer.stats()
    assert stats["rejected_total"] == invalid, stats["rejected"]
    assert set(stats["rejected"]) <= KNOWN_KINDS, stats["rejected"]
    by_task: dict[str, list[Event]] = {}
    for original in valid:
        event = decode(encode(original))  # the event as the server sees it (e.g. NUL made storable)
        assert event.task_id is not None
        by_task.setdefault(event.task_id, []).append(event)
    if fresh:
        assert store.stats().tasks == len(by_task)
    for task_id, events in by_task.items():
        stored = store.get_task(task_id)
        assert stored is not None, task_id
        assert _comparable(stored) == _comparable(fold_task(task_id, events)), task_id


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_maker(request: pytest.FixtureRequest) -> Iterator[Callable[[], tuple[Store, bool]]]:
    """(store, fresh): a new in-memory SQLite store per example; one PostgreSQL database for the module
    (task ids are unique per example, so examples never see each other's tasks)."""
    if request.param == "sqlite":
        yield lambda: (open_store("sqlite:///:memory:"), True)
        return
    pg_url: str = request.getfixturevalue("pg_url")
    with own_database(pg_url.rpartition("/")[0], f"cf_prop_{uuid.uuid4().hex[:8]}") as url:
        shared = open_store(url)
        try:
            yield lambda: (shared, False)
        finally:
            shared.close()


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW_OK)
@given(data=streams(), batch=st.integers(1, 40))
def test_consumer_folds_valid_events_and_counts_everything_else(
    store_maker: Callable[[], tuple[Store, bool]], data: tuple[list[bytes], list[Event], int], batch: int
) -> None:
    entries, valid, invalid = data
    store, fresh = store_maker()
    consumer = Consumer("memory://", store, batch=batch)
    try:
        messages = [Message(f"{i}-0", raw) for i, raw in enumerate(entries)]
        for start in range(0, len(messages), batch):
            consumer.process(messages[start : start + batch])  # raises if the store refused a batch
        _check(store, consumer, valid, invalid, fresh)
        assert consumer.stats()["store_errors_total"] == 0
    finally:
        if fresh:
            store.close()


@pytest.fixture(scope="module")
def redis_conn(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


odd_entries = st.lists(
    st.dictionaries(st.binary(max_size=8), st.binary(max_size=8), min_size=1, max_size=3), max_size=3
)


@settings(max_examples=8, deadline=None, suppress_health_check=SLOW_OK)
@given(data=streams(), odd_fields=odd_entries)
def test_consumer_through_a_real_redis_stream(
    redis_url: str,
    redis_conn: Any,
    data: tuple[list[bytes], list[Event], int],
    odd_fields: list[dict[bytes, bytes]],
) -> None:
    """The same property through XADD/XREADGROUP/XACK, plus entries without the `e` field at all."""
    entries, valid, invalid = data
    prefix = f"cft_prop_{uuid.uuid4().hex[:8]}"
    stream = f"{prefix}:events"
    fields: list[dict[bytes, bytes]] = [{b"e": raw} for raw in entries]
    # An entry with neither `e` (one event) nor `b` (a batch of them), as another tool writing to our key
    # would leave, is an empty event: rejected, never fatal. (`b` holding junk is one rejection per line.)
    odd = [f for f in odd_fields if b"e" not in f and b"b" not in f]
    fields += odd
    invalid += len(odd)
    redis_conn.xgroup_create(stream, "celery_flow", id="0", mkstream=True)
    pipe = redis_conn.pipeline(transaction=False)
    for entry in fields:
        pipe.xadd(stream, entry)
    pipe.execute()
    store = open_store("sqlite:///:memory:")
    consumer = Consumer(redis_url, store, prefix=prefix, batch=7, read_timeout=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: redis_conn.xpending(stream, "celery_flow")["pending"] == 0
                 and consumer.stats()["acked_total"] == len(fields), 30, "all acknowledged")  # fmt: skip
        assert thread.is_alive()
        _check(store, consumer, valid, invalid)
    finally:
        stop.set()
        thread.join(10)
        store.close()
        redis_conn.delete(stream)
