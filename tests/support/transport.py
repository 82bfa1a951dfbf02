"""Reading a transport subscription the way transport tests need it."""

from __future__ import annotations

import time

from celery_flow.transport import Message, Subscription

__all__ = ["read_all"]


def read_all(
    sub: Subscription, want: int, timeout: float = 10.0, count: int = 100, ack: bool = False
) -> list[Message]:
    """Messages read from `sub`, `count` at a time, until `want` arrived or `timeout` seconds passed (then
    fewer: the caller asserts what it expected); acknowledged as they are read when `ack`."""
    out: list[Message] = []
    end = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < end:
        batch = sub.read(count=count, timeout=0.2)
        out.extend(batch)
        if ack:
            sub.ack([m.id for m in batch])
    return out
