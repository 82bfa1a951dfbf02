"""Batch framing (transport/base.py `frames`), shared by the Redis and RabbitMQ transports: every payload
arrives, in order, and a batch never holds an ambiguous or oversize payload."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from celery_flow.transport.base import MAX_FRAME_BYTES, MAX_FRAME_EVENTS, frames

_payload = st.one_of(
    st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b),
    st.binary(max_size=40),  # empty or with newlines now and then: those travel alone
    st.builds(lambda n: b"x" * n, st.integers(MAX_FRAME_BYTES // 4, MAX_FRAME_BYTES // 2)),  # size bound
)


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(_payload, max_size=600))
def test_frames_keep_every_payload_in_order_within_the_bounds(payloads: list[bytes]) -> None:
    out = list(frames(payloads))
    unpacked = [p for data, n in out for p in (data.split(b"\n") if n > 1 else [data])]
    assert unpacked == payloads
    for data, n in out:
        assert 1 <= n <= MAX_FRAME_EVENTS
        if n > 1:
            assert len(data) <= MAX_FRAME_BYTES
            assert all(data.split(b"\n"))  # no empty event inside a batch
    # Unambiguous: an empty payload or one holding a newline is always an entry of its own.
    alone = [data for data, n in out if n == 1]
    assert all(p in alone for p in payloads if not p or b"\n" in p)


def test_frames_batch_compact_events_in_full_frames() -> None:
    payloads = [b'{"n":%d}' % i for i in range(600)]
    assert [n for _, n in frames(payloads)] == [256, 256, 88]
