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

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celery_flow.transport import DeliveryUnknown, TransportError
from celery_flow.transport.redis import RedisTransport, stream_key
from tests.support.outage import check_books_after_outage
from tests.support.redis_server import PrivateRedis
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as server:
        yield server


@contextlib.contextmanager
def _frozen(private: PrivateRedis) -> Iterator[None]:
    private.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        private.signal(signal.SIGCONT)


@contextlib.contextmanager
def _killed(private: PrivateRedis) -> Iterator[None]:
    private.kill()
    try:
        yield
    finally:
        private.start()


def test_frozen_redis_kept_events_arrive_and_drop_count_is_exact(
    redis_url: str, private_redis: PrivateRedis, unique_prefix: str, tmp_path: Path
) -> None:
    url = private_redis.url
    check_books_after_outage(redis_url, url, url, unique_prefix, tmp_path, lambda: _frozen(private_redis))


def test_killed_redis_kept_events_arrive_and_drop_count_is_exact(
    redis_url: str, private_redis: PrivateRedis, unique_prefix: str, tmp_path: Path
) -> None:
    url = private_redis.url
    check_books_after_outage(redis_url, url, url, unique_prefix, tmp_path, lambda: _killed(private_redis))


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
