"""In-process transport (`memory://name`) for tests of pure logic and for `celery-flow demo`.

It mimics a Redis stream with consumer groups closely enough that consumer logic tested against it
behaves the same against Redis: every group delivers each entry to one member, entries stay pending until
acknowledged, a new subscription under the same consumer name first gets back its own pending entries
(a restart), and entries left idle longer than `min_idle` by another member are claimed.

Logs live in a process-wide registry keyed by (URL, prefix), so a publisher and a subscription created
separately in one process with the same `memory://name` share one log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from celery_flow.settings import DEFAULT_PREFIX
from celery_flow.transport.base import DEFAULT_MAXLEN, Message, TransportError

__all__ = ["MemorySubscription", "MemoryTransport", "reset_memory_transports"]

DEFAULT_MIN_IDLE = 10.0  # as Redis (transport/redis.py)


@dataclass
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int = 1


@dataclass
class _Group:
    last_delivered: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)


class _Log:
    """One stream: entries by sequence number and its consumer groups, guarded by one Condition."""

    def __init__(self, maxlen: int) -> None:
        self.cond = threading.Condition()
        self.entries: dict[int, bytes] = {}
        self.first = 1  # lowest sequence number still stored
        self.next_seq = 1
        self.maxlen = maxlen
        self.groups: dict[str, _Group] = {}

    def append(self, payloads: Sequence[bytes]) -> None:
        with self.cond:
            for payload in payloads:
                self.entries[self.next_seq] = bytes(payload)
                self.next_seq += 1
            while len(self.entries) > self.maxlen:
                self.entries.pop(self.first, None)
                self.first += 1
            self.cond.notify_all()


_registry: dict[tuple[str, str], _Log] = {}
_registry_lock = threading.Lock()


def _log_for(url: str, prefix: str, maxlen: int) -> _Log:
    with _registry_lock:
        log = _registry.get((url, prefix))
        if log is None:
            log = _registry[(url, prefix)] = _Log(maxlen)
        return log


def reset_memory_transports() -> None:
    """Forget every in-process log (tests call this to start from nothing)."""
    with _registry_lock:
        _registry.clear()


def _mid(seq: int) -> str:
    return f"{seq}-0"


def _seq(message_id: str) -> int:
    try:
        return int(message_id.split("-", 1)[0])
    except ValueError:
        return -1


class MemoryTransport:
    """A Transport whose stream lives in this process. `set_available(False)` simulates a dead broker."""

    def __init__(
        self,
        url: str = "memory://",
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = DEFAULT_MAXLEN,
        min_idle: float = DEFAULT_MIN_IDLE,
        ttl: float | None = None,
    ) -> None:
        """`ttl` is accepted like the other transports' and unused: the log is bounded by `maxlen` alone."""
        self.url = url
        self.prefix = prefix
        self.safe_url = url
        self.min_idle = min_idle
        self._log = _log_for(url, prefix, maxlen)
        self._available = True

    def set_available(self, available: bool) -> None:
        """Make publish/ping raise TransportError (False) or work again (True), like a broker outage."""
        self._available = available

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not self._available:
            raise TransportError(f"{self.safe_url} is unavailable")
        if payloads:
            self._log.append(payloads)

    def entries(self) -> list[bytes]:
        """Every stored payload in order (for tests and the demo; consumers use subscribe())."""
        with self._log.cond:
            return [self._log.entries[s] for s in sorted(self._log.entries)]

    def subscribe(self, group: str, consumer: str) -> MemorySubscription:
        return MemorySubscription(self._log, group, consumer, self.min_idle)

    def ping(self) -> None:
        if not self._available:
            raise TransportError(f"{self.safe_url} is unavailable")

    def close(self) -> None:
        """Nothing to release: the log outlives transports so a later one with the same URL sees it."""


class MemorySubscription:
    """One member of a consumer group on an in-process log; same delivery rules as the Redis one."""

    def __init__(self, log: _Log, group: str, consumer: str, min_idle: float) -> None:
        self._log = log
        self.group = group
        self.consumer = consumer
        self.min_idle = min_idle
        self._closed = False
        with log.cond:
            # A new group starts from the beginning of the stream, like XGROUP CREATE ... 0.
            self._group = log.groups.setdefault(group, _Group(last_delivered=0))
        # After a restart, first re-deliver what this consumer name had taken but not acknowledged.
        self._pending_cursor: int | None = 0

    def read(self, count: int, timeout: float) -> list[Message]:
        deadline = time.monotonic() + max(timeout, 0.0)
        log = self._log
        with log.cond:
            while True:
                if self._closed:
                    return []
                out = self._take(count)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                # Wake up for new entries, or in time to claim entries going idle.
                log.cond.wait(min(remaining, max(self.min_idle / 4, 0.01)))

    def _take(self, count: int) -> list[Message]:
        log, grp, now = self._log, self._group, time.monotonic()
        out: list[Message] = []
        if self._pending_cursor is not None:
            for seq in sorted(s for s, p in grp.pending.items() if p.consumer == self.consumer):
                if seq < self._pending_cursor:
                    continue
                if len(out) >= count:
                    break
                self._pending_cursor = seq + 1
                out.extend(self._deliver(seq, now))
            if out:
                return out
            self._pending_cursor = None
        # Claim entries another member took and left idle (it probably died).
        for seq in sorted(grp.pending):
            if len(out) >= count:
                break
            p = grp.pending[seq]
            if p.consumer != self.consumer and now - p.delivered_at >= self.min_idle:
                out.extend(self._deliver(seq, now))
        if out:
            return out
        seq = max(grp.last_delivered + 1, log.first)
        while seq < log.next_seq and len(out) < count:
            if seq in log.entries:
                grp.pending[seq] = _Pending(self.consumer, now, 0)
                out.extend(self._deliver(seq, now))
            grp.last_delivered = seq
            seq += 1
        return out

    def _deliver(self, seq: int, now: float) -> list[Message]:
        grp = self._group
        data = self._log.entries.get(seq)
        if data is None:  # trimmed while pending: nothing left to deliver
            grp.pending.pop(seq, None)
            return []
        p = grp.pending[seq]
        p.consumer, p.delivered_at, p.deliveries = self.consumer, now, p.deliveries + 1
        return [Message(_mid(seq), data)]

    def ack(self, ids: Sequence[str]) -> None:
        with self._log.cond:
            for message_id in ids:
                self._group.pending.pop(_seq(message_id), None)

    def lag(self) -> int | None:
        log = self._log
        with log.cond:
            start = max(self._group.last_delivered + 1, log.first)
            undelivered = sum(1 for s in log.entries if s >= start)
            return undelivered + len(self._group.pending)

    def close(self) -> None:
        with self._log.cond:
            self._closed = True
            self._log.cond.notify_all()
