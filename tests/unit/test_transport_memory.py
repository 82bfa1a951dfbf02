"""MemoryTransport follows the same delivery rules as the Redis one, so consumer tests can rely on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from tests.support.wait import wait_for

from celery_flow.transport import TransportError, from_url
from celery_flow.transport.memory import MemoryTransport, reset_memory_transports


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset_memory_transports()
    yield
    reset_memory_transports()


def test_publisher_and_subscriber_with_same_url_share_a_log() -> None:
    pub = from_url("memory://shared")
    sub = from_url("memory://shared").subscribe("g", "c")
    other = from_url("memory://other").subscribe("g", "c")
    pub.publish([b"a", b"b"])
    assert [m.data for m in sub.read(10, 0.1)] == [b"a", b"b"]
    assert other.read(10, 0.05) == []


def test_read_blocks_until_an_entry_arrives() -> None:
    t = MemoryTransport("memory://block")
    sub = t.subscribe("g", "c")
    timer = threading.Timer(0.1, t.publish, args=([b"late"],))
    timer.start()
    start = time.monotonic()
    msgs = sub.read(10, timeout=5)
    assert [m.data for m in msgs] == [b"late"]
    assert time.monotonic() - start < 4
    timer.join()


def test_read_times_out_empty() -> None:
    sub = MemoryTransport("memory://empty").subscribe("g", "c")
    start = time.monotonic()
    assert sub.read(10, timeout=0.1) == []
    assert time.monotonic() - start >= 0.09


def test_pending_until_ack_and_restart_redelivers_only_unacked() -> None:
    t = MemoryTransport("memory://restart")
    t.publish([b"1", b"2", b"3"])
    sub = t.subscribe("g", "c")
    msgs = sub.read(10, 0.1)
    assert sub.lag() == 3
    sub.ack([msgs[0].id])
    assert sub.lag() == 2
    sub.close()
    t.publish([b"4"])
    again = t.subscribe("g", "c")
    assert [m.data for m in again.read(10, 0.1)] == [b"2", b"3"]
    assert [m.data for m in again.read(10, 0.1)] == [b"4"]
    again.ack([m.id for m in msgs[1:]])
    assert again.lag() == 1


def test_idle_entries_of_a_dead_member_are_claimed() -> None:
    t = MemoryTransport("memory://claim", min_idle=0.05)
    t.publish([b"x", b"y"])
    dead = t.subscribe("g", "dead")
    assert len(dead.read(10, 0.1)) == 2
    alive = t.subscribe("g", "alive")
    got: list[bytes] = []

    def both_claimed() -> bool:
        got.extend(m.data for m in alive.read(10, 0.1))
        return len(got) >= 2

    wait_for(both_claimed, 5, "x and y claimed", interval=0, retry_on=())
    assert sorted(got) == [b"x", b"y"]


def test_members_split_and_groups_each_see_everything() -> None:
    t = MemoryTransport("memory://split")
    t.publish([str(i).encode() for i in range(10)])
    a, b = t.subscribe("g", "a"), t.subscribe("g", "b")
    got_a = {m.data for m in a.read(4, 0.1)}
    got_b = {m.data for m in b.read(100, 0.1)}
    assert (len(got_a), len(got_b)) == (4, 6)
    assert got_a.isdisjoint(got_b)
    assert len(t.subscribe("other", "x").read(100, 0.1)) == 10


def test_unavailable_broker_raises_transport_error() -> None:
    t = MemoryTransport("memory://down")
    t.set_available(False)
    with pytest.raises(TransportError):
        t.publish([b"x"])
    with pytest.raises(TransportError):
        t.ping()
    t.set_available(True)
    t.publish([b"x"])
    assert t.entries() == [b"x"]


def test_maxlen_trims_oldest() -> None:
    t = MemoryTransport("memory://trim", maxlen=3)
    t.publish([b"1", b"2", b"3", b"4", b"5"])
    assert t.entries() == [b"3", b"4", b"5"]
    assert [m.data for m in t.subscribe("g", "c").read(10, 0.1)] == [b"3", b"4", b"5"]
