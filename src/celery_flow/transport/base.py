"""The small protocol every broker transport implements, for both sides of the wire.

Publishing side (the user's process): `publish()` is only ever called from the publisher's background
thread, with a batch of already-encoded events; it may block up to the transport's own socket timeout and
raises TransportError on any failure (the caller drops and counts, it never retries into the task).

Consuming side (the server): a `Subscription` is one member of a shared consumer group. `read()` returns
new entries plus entries that other, dead consumers left unacknowledged; `ack()` is called only after the
store has committed them. Entries are opaque bytes here: decoding and validation belong to the consumer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol


class TransportError(Exception):
    """The broker could not be reached or refused the operation."""


class ConfigError(ValueError):
    """A bad transport URL or option; the message is one line that names the fix."""


class Message(NamedTuple):
    """One stream entry or queue message: a broker-specific delivery id and the raw payload."""

    id: str
    data: bytes


class Subscription(Protocol):
    def read(self, count: int, timeout: float) -> list[Message]:
        """Up to `count` entries, waiting at most `timeout` seconds for the first one."""
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
