"""The small protocol every broker transport implements, for both sides of the wire.

Publishing side (the user's process): `publish()` is only ever called from the publisher's background
thread, with a batch of already-encoded events; it may block up to the transport's own socket timeout and
raises TransportError on any failure (the caller drops and counts, it never retries into the task),
DeliveryUnknown when the batch may have been stored anyway.

Consuming side (the server): a `Subscription` is one member of a shared consumer group. `read()` returns
new entries plus entries that other, dead consumers left unacknowledged; `ack()` is called only after the
store has committed them. Entries are opaque bytes here: decoding and validation belong to the consumer.

Framing. Transports ship a batch of events as few entries as possible, because each broker entry costs the
publisher thread CPU, and that thread shares the GIL with the user's tasks: consecutive events are joined into
one *batch entry* of newline-delimited JSON, since msgspec's compact JSON never contains a raw newline. A lone
event, and any payload that is empty or contains a newline (never produced by `events.encode`, but a foreign
writer might), travels as a single-event entry, the format every version reads. On reading, a subscription
splits a batch entry back into one `Message` per event, all carrying the entry's id (`unframe`), so readers
see events as before. The id is acknowledged once for the whole entry, so a subscription never splits one
entry across `read()` calls, and a consumer that acks only what it committed never acks an event it has not
committed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple, Protocol

from celery_flow.errors import ConfigError

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAXLEN",
    "DEFAULT_SOCKET_TIMEOUT",
    "MAX_ENTRY_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_FRAME_EVENTS",
    "NDJSON",
    "ConfigError",
    "Message",
    "Subscription",
    "Transport",
    "TransportError",
    "frames",
    "unframe",
]

#: AMQP content type of a batch message (Redis marks a batch entry by its field name instead).
NDJSON = "application/x-ndjson"
#: A batch entry carries at most this many events / bytes, so entries stay small for the broker and
#: the stream's length bound (in entries) stays meaningful.
MAX_FRAME_EVENTS = 256
MAX_FRAME_BYTES = 256 * 1024
#: A consumer rejects a batch entry larger than this as a whole (`oversize`) without splitting it.
MAX_ENTRY_BYTES = 16 * 1024 * 1024
#: Events a transport keeps for the server by default: the broker is a buffer, never the history.
DEFAULT_MAXLEN = 100_000
#: Connect and socket timeouts: a refused, unreachable or frozen broker stalls the publisher's thread
#: about a second, never longer.
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 1.0


class TransportError(Exception):
    """The broker could not be reached or refused the operation."""


class DeliveryUnknown(TransportError):
    """A publish failed after writing: the broker may have stored all, some or none of the batch (its
    answer was lost, or it refused part). Sending the batch again is safe, since the store keeps an event
    once by its id; counting it as dropped is not, since it may arrive."""


class Message(NamedTuple):
    """One stream entry or queue message: a broker-specific delivery id and the raw payload."""

    id: str
    data: bytes


def frames(payloads: Sequence[bytes], max_bytes: int = MAX_FRAME_BYTES) -> Iterator[tuple[bytes, int]]:
    """Group encoded events into wire entries `(data, events)`; `events == 1` means a single-event entry.

    Order is kept. A batch holds at most MAX_FRAME_EVENTS events and at most `max_bytes` bytes (a broker
    with a smaller message limit, SQS, passes its own).
    """
    for start in range(0, len(payloads), MAX_FRAME_EVENTS):
        part = payloads[start : start + MAX_FRAME_EVENTS]
        if len(part) == 1:
            yield part[0], 1
            continue
        # The common case in C, without a Python step per event: no payload is empty or holds a newline
        # (the publisher's are compact JSON), and the part fits the size bound.
        data = b"\n".join(part)
        if len(data) <= max_bytes and all(part) and data.count(b"\n") == len(part) - 1:
            yield data, len(part)
        else:
            yield from _frames_one_by_one(part, max_bytes)


def _frames_one_by_one(payloads: Sequence[bytes], max_bytes: int) -> Iterator[tuple[bytes, int]]:
    chunk: list[bytes] = []
    size = 0
    for payload in payloads:
        # `find`, not `in`: bytes.__contains__ first tries its operand as an int, raising (and clearing)
        # a TypeError for every payload.
        if not payload or payload.find(b"\n") >= 0:  # cannot be framed unambiguously: ship it alone
            if chunk:
                yield (b"\n".join(chunk), len(chunk)) if len(chunk) > 1 else (chunk[0], 1)
                chunk, size = [], 0
            yield payload, 1
            continue
        if chunk and size + len(payload) > max_bytes:
            yield (b"\n".join(chunk), len(chunk)) if len(chunk) > 1 else (chunk[0], 1)
            chunk, size = [], 0
        chunk.append(payload)
        size += len(payload) + 1
    if chunk:
        yield (b"\n".join(chunk), len(chunk)) if len(chunk) > 1 else (chunk[0], 1)


class Subscription(Protocol):
    def read(self, count: int, timeout: float) -> list[Message]:
        """Up to `count` entries, waiting at most `timeout` seconds for the first one.

        A batch entry comes as one Message per event (same id), all in the same call.
        """
        ...

    def ack(self, ids: Sequence[str]) -> None:
        """Acknowledge entries once the store has committed what they carried."""
        ...

    def lag(self) -> int | None:
        """Entries delivered to nobody yet plus entries pending acknowledgement, when the broker knows."""
        ...

    def close(self) -> None: ...


class Transport(Protocol):
    #: The URL with any password replaced by `***`, safe to log and show in /api/health.
    safe_url: str

    def publish(self, payloads: Sequence[bytes]) -> None:
        """Write a batch of encoded events in one round trip (pipelined / one channel flush)."""
        ...

    def subscribe(self, group: str, consumer: str) -> Subscription:
        """Join (creating if needed) the shared consumer group as member `consumer`."""
        ...

    def ping(self) -> None:
        """Raise TransportError unless the broker answers now."""
        ...

    def close(self) -> None: ...


def unframe(message_id: str, data: bytes) -> list[Message]:
    """The events of a batch entry as Messages sharing its id; an entry over MAX_ENTRY_BYTES is left
    whole (the consumer rejects it as `oversize` without splitting megabytes of lines)."""
    if len(data) > MAX_ENTRY_BYTES:
        return [Message(message_id, data)]
    return [Message(message_id, line) for line in data.split(b"\n")]
