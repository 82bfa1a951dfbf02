"""RedisTransport against the real Redis: the delivery guarantees the consumer relies on (DESIGN.md §3)."""

from __future__ import annotations

import time

import pytest
import redis
from tests.support.transport import read_all

from celery_flow.transport import Transport, TransportError, from_url
from celery_flow.transport.redis import RedisTransport


def _publish_each(t: Transport, payloads: list[bytes]) -> None:
    """One publish per event, so each is an entry of its own (a lone event's format)."""
    for payload in payloads:
        t.publish([payload])


def test_publish_read_ack_and_lag(redis_url: str, unique_prefix: str, redis_client: redis.Redis) -> None:
    t = from_url(redis_url, prefix=unique_prefix)
    assert isinstance(t, RedisTransport)
    _publish_each(t, [b"one", b"two", b"three"])
    assert redis_client.xlen(f"{unique_prefix}:events") == 3
    sub = t.subscribe("g", "c1")
    msgs = read_all(sub, 3)
    assert [m.data for m in msgs] == [b"one", b"two", b"three"]
    assert sub.lag() == 3  # delivered but not acknowledged yet
    sub.ack([m.id for m in msgs])
    assert sub.lag() == 0
    t.publish([b"four"])
    assert sub.lag() == 1
    assert [m.data for m in read_all(sub, 1)] == [b"four"]
    # Nothing left: read returns empty after its timeout.
    assert sub.read(count=10, timeout=0.1) == []
    sub.close()
    t.close()


def test_restart_resumes_pending_without_replaying_acked(redis_url: str, unique_prefix: str) -> None:
    t = from_url(redis_url, prefix=unique_prefix)
    _publish_each(t, [f"m{i}".encode() for i in range(6)])
    first = t.subscribe("g", "worker-a")
    got = read_all(first, 6)
    first.ack([m.id for m in got[:4]])  # crash before acknowledging m4, m5
    first.close()

    t.publish([b"m6"])
    again = t.subscribe("g", "worker-a")
    resumed = read_all(again, 3)
    assert [m.data for m in resumed] == [b"m4", b"m5", b"m6"]
    again.ack([m.id for m in resumed])
    assert again.read(count=10, timeout=0.1) == []
    assert again.lag() == 0


def test_autoclaim_takes_over_a_dead_consumers_entries(redis_url: str, unique_prefix: str) -> None:
    t = RedisTransport(redis_url, prefix=unique_prefix, min_idle=0.2, claim_interval=0.0)
    t.publish([b"a", b"b", b"c"])
    dead = t.subscribe("g", "dead")
    taken = read_all(dead, 3)
    assert len(taken) == 3  # and then it dies without acking
    time.sleep(0.3)  # let them go idle past min_idle
    alive = t.subscribe("g", "alive")
    claimed = read_all(alive, 3)
    assert sorted(m.data for m in claimed) == [b"a", b"b", b"c"]
    alive.ack([m.id for m in claimed])
    assert alive.lag() == 0


def test_two_consumers_split_the_load(redis_url: str, unique_prefix: str) -> None:
    t = from_url(redis_url, prefix=unique_prefix)
    a, b = t.subscribe("g", "a"), t.subscribe("g", "b")
    _publish_each(t, [f"{i}".encode() for i in range(10)])
    got_a = a.read(count=5, timeout=1)
    got_b = read_all(b, 5)
    assert len(got_a) == 5
    assert len(got_b) == 5
    assert {m.data for m in got_a}.isdisjoint({m.data for m in got_b})
    assert {m.data for m in got_a} | {m.data for m in got_b} == {f"{i}".encode() for i in range(10)}


def test_two_groups_each_see_everything(redis_url: str, unique_prefix: str) -> None:
    t = from_url(redis_url, prefix=unique_prefix)
    t.publish([b"x", b"y"])
    assert [m.data for m in read_all(t.subscribe("g1", "c"), 2)] == [b"x", b"y"]
    assert [m.data for m in read_all(t.subscribe("g2", "c"), 2)] == [b"x", b"y"]


def test_stream_is_capped_by_maxlen(redis_url: str, unique_prefix: str, redis_client: redis.Redis) -> None:
    t = RedisTransport(redis_url, prefix=unique_prefix, maxlen=100)
    _publish_each(t, [b"x" * 10] * 2000)
    # MAXLEN ~ trims whole macro nodes, so it may keep somewhat more than 100, never everything.
    assert redis_client.xlen(f"{unique_prefix}:events") < 1000


def test_unreachable_server_fails_fast_with_redacted_url() -> None:
    t = from_url("redis://:s3cret@127.0.0.1:1/0", prefix="x")
    assert "s3cret" not in t.safe_url
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        t.publish([b"x"])
    assert time.monotonic() - start < 5
    assert "s3cret" not in str(err.value)
    with pytest.raises(TransportError):
        t.ping()


# ---- batch framing (transport/base.py `frames`) --------------------------------------------------


def test_a_batch_is_one_entry_read_whole_and_acked_once(
    redis_url: str, unique_prefix: str, redis_client: redis.Redis
) -> None:
    t = RedisTransport(redis_url, prefix=unique_prefix)
    payloads = [f'{{"n":{i}}}'.encode() for i in range(600)]
    t.publish(payloads)
    t.publish([b"lone"])  # a single event keeps the original one-event entry (field `e`)
    # 600 events: batches of at most 256 events, so three entries, plus the lone one.
    assert redis_client.xlen(f"{unique_prefix}:events") == 4
    entries = redis_client.xrange(f"{unique_prefix}:events")
    assert [sorted(fields) for _, fields in entries] == [[b"b"]] * 3 + [[b"e"]]
    sub = t.subscribe("celery_flow", "c1")
    first = sub.read(count=1, timeout=1.0)  # one entry: all of its events, one id
    assert [m.data for m in first] == payloads[:256]
    assert {m.id for m in first} == {entries[0][0].decode()}
    rest = read_all(sub, 345)
    assert [m.data for m in first + rest] == [*payloads, b"lone"]
    assert len({m.id for m in first + rest}) == 4
    sub.ack(list({m.id for m in first + rest}))
    assert sub.lag() == 0  # lag counts entries


def test_payloads_that_cannot_be_framed_travel_alone(
    redis_url: str, unique_prefix: str, redis_client: redis.Redis
) -> None:
    t = RedisTransport(redis_url, prefix=unique_prefix)
    t.publish([b"a", b"b", b"", b"x\ny", b"c", b"d"])
    fields = [f for _, f in redis_client.xrange(f"{unique_prefix}:events")]
    assert fields == [{b"b": b"a\nb"}, {b"e": b""}, {b"e": b"x\ny"}, {b"b": b"c\nd"}]
    msgs = read_all(t.subscribe("celery_flow", "c1"), 6)
    assert [m.data for m in msgs] == [b"a", b"b", b"", b"x\ny", b"c", b"d"]


def test_maxlen_counts_events_across_batches(
    redis_url: str, unique_prefix: str, redis_client: redis.Redis
) -> None:
    t = RedisTransport(redis_url, prefix=unique_prefix, maxlen=1000)
    for batch in range(40):
        t.publish([f"{batch}:{i}".encode() for i in range(100)])  # 4,000 events in 40 entries
    kept = sum(len(f[b"b"].split(b"\n")) for _, f in redis_client.xrange(f"{unique_prefix}:events"))
    # `MAXLEN ~ 1000/100` entries: about 1,000 events kept (approximate trimming keeps a bit more).
    assert 1000 <= kept < 4000
    last = redis_client.xrevrange(f"{unique_prefix}:events", count=1)[0][1][b"b"]
    assert last.split(b"\n")[-1] == b"39:99"  # the newest survive
