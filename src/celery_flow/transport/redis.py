"""Redis Streams transport: stream `{prefix}:events` (DESIGN.md §3).

An entry holds either one event in field `e` (a lone event, the format every version reads) or a
batch of events as newline-delimited JSON in field `b` (see `base.frames`): a publish of many events is
one `XADD` per batch of up to 256 events / 256 KB, all pipelined in one round trip. The stream is a
buffer between the user's processes and the server, not the history (the store keeps that), so it is
bounded by length on every write (`MAXLEN ~`, cheap: whole macro nodes are dropped) and, when `ttl` is
given, also by age with an `XTRIM MINID ~ <now - ttl>` added to a batch at most once a minute. Only one
trimming strategy fits in one XADD, hence the split. `maxlen` is in *events*: Redis counts entries, so
an entry of k events trims the stream to `maxlen / k` entries, which keeps about `maxlen` events while
entries are of similar size (a burst of full batches after many lone events trims more eagerly).
Reading splits a batch entry into one Message per event, all with the entry's id (`base.unframe`).

Sockets time out after about a second (connect and read) and redis-py's own retries are off, so the
publisher's thread gives up quickly on a refused, unreachable or frozen server and drops instead of
hanging. A publish connects before it writes, so that a failure after writing (a frozen server keeps
what was written in its socket and runs it when it resumes) raises DeliveryUnknown, not TransportError.

Consuming uses a consumer group: after a (re)start a member first reads back its own pending entries
(`XREADGROUP ... 0`), then new ones (`>`), and every `claim_interval` it takes over entries idle longer
than `min_idle` from dead members (`XAUTOCLAIM`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celery_flow.errors import ConfigError
from celery_flow.settings import DEFAULT_PREFIX
from celery_flow.transport.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAXLEN,
    DEFAULT_SOCKET_TIMEOUT,
    DeliveryUnknown,
    Message,
    TransportError,
    frames,
    unframe,
)
from celery_flow.transport.urls import redact_url

__all__ = ["RedisSubscription", "RedisTransport", "stream_key"]

# A dead member's entries are folded by another within 15 s (the promise in docs/deployment.md): claimed
# once idle for 10 s, looked for every 2.5 s, which leaves a few seconds to fold them.
DEFAULT_MIN_IDLE = 10.0
DEFAULT_CLAIM_INTERVAL = 2.5
# The consumer's socket must outlive its longest XREADGROUP BLOCK; reads block at most this long.
DEFAULT_READ_SOCKET_TIMEOUT = 30.0
_TTL_TRIM_INTERVAL = 60.0
_ACK_CHUNK = 1000


def stream_key(prefix: str) -> str:
    return f"{prefix}:events"


def _client(url: str, socket_timeout: float | None, connect_timeout: float) -> redis.Redis:
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            decode_responses=False,
        )
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None


def _connect(pool: redis.ConnectionPool) -> None:
    """Connect the pool's idle connection (or check it still is) and put it back, so that a pipeline
    run next takes it ready: one thread publishes, and the pool hands out its last released first."""
    try:
        connection = pool.get_connection()
    except TypeError:  # redis-py < 5.3 requires a command name
        connection = pool.get_connection("XADD")
    pool.release(connection)


def _wrap(exc: Exception, safe_url: str) -> TransportError:
    return TransportError(f"redis {safe_url}: {type(exc).__name__}: {exc}")


class RedisTransport:
    """Transport over one Redis stream. Options come from `from_url(url, prefix, **options)`."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = DEFAULT_MAXLEN,
        ttl: float | None = None,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        min_idle: float = DEFAULT_MIN_IDLE,
        claim_interval: float = DEFAULT_CLAIM_INTERVAL,
        read_socket_timeout: float = DEFAULT_READ_SOCKET_TIMEOUT,
    ) -> None:
        if maxlen <= 0:
            raise ConfigError(f"maxlen must be positive, got {maxlen}")
        self.url = url
        self.safe_url = redact_url(url)
        self.prefix = prefix
        self.stream = stream_key(prefix)
        self.maxlen = maxlen
        self.ttl = ttl
        self.min_idle = min_idle
        self.claim_interval = claim_interval
        self.read_socket_timeout = read_socket_timeout
        self.connect_timeout = connect_timeout
        self._client = _client(url, socket_timeout, connect_timeout)
        self._next_ttl_trim = 0.0

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            stream, maxlen = self.stream, self.maxlen
            for data, events in frames(payloads):
                if events == 1:
                    pipe.xadd(stream, {"e": data}, maxlen=maxlen, approximate=True)
                else:
                    pipe.xadd(stream, {"b": data}, maxlen=max(1, maxlen // events), approximate=True)
            adds = len(pipe)
            now = time.time()
            if self.ttl is not None and now >= self._next_ttl_trim:
                self._next_ttl_trim = now + _TTL_TRIM_INTERVAL
                pipe.xtrim(self.stream, minid=f"{int((now - self.ttl) * 1000)}-0", approximate=True)
            _connect(self._client.connection_pool)  # a failure up to here wrote nothing
        except redis.RedisError as exc:
            raise _wrap(exc, self.safe_url) from None
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:  # written, but the answer was lost (a frozen or slow server)
            raise DeliveryUnknown(str(_wrap(exc, self.safe_url))) from None
        refused = [r for r in results[:adds] if isinstance(r, Exception)]  # the XTRIM's answer aside
        if refused:
            error = TransportError if len(refused) == adds else DeliveryUnknown
            raise error(f"redis {self.safe_url}: {len(refused)} of {adds} XADD refused: {refused[0]}")

    def subscribe(self, group: str, consumer: str) -> RedisSubscription:
        client = _client(self.url, self.read_socket_timeout, self.connect_timeout)
        return RedisSubscription(self, client, group, consumer)

    def ping(self) -> None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise _wrap(exc, self.safe_url) from None

    def close(self) -> None:
        self._client.close()


class RedisSubscription:
    """One member of a consumer group on the events stream."""

    def __init__(self, transport: RedisTransport, client: redis.Redis, group: str, consumer: str) -> None:
        self._t = transport
        self._client = client
        self.group = group
        self.consumer = consumer
        self.stream = transport.stream
        # "0": re-read this member's own pending entries first (a restart); None once drained.
        self._pending_cursor: str | None = "0"
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def read(self, count: int, timeout: float) -> list[Message]:
        try:
            self._ensure_group()
            if self._pending_cursor is not None:
                own = self._read_own_pending(count)
                if own:
                    return own
            now = time.monotonic()
            if now >= self._next_claim:
                claimed = self._claim(count)
                if claimed:
                    return claimed
            block_ms = int(max(0.0, min(timeout, self._t.read_socket_timeout - 1.0)) * 1000)
            resp: Any = self._client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=count,
                block=block_ms if block_ms > 0 else None,
            )
            return self._messages(resp)
        except redis.RedisError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted: recreate the group next time
                self._group_ready = False
            raise _wrap(exc, self._t.safe_url) from None

    def _read_own_pending(self, count: int) -> list[Message]:
        assert self._pending_cursor is not None
        resp: Any = self._client.xreadgroup(
            self.group, self.consumer, {self.stream: self._pending_cursor}, count=count
        )
        entries = resp[0][1] if resp else []
        if not entries:
            self._pending_cursor = None
            return []
        last = entries[-1][0]
        self._pending_cursor = last.decode() if isinstance(last, bytes) else str(last)
        out, gone = self._split(entries)
        if gone:  # deleted/trimmed while pending: nothing to deliver, release them
            self._client.xack(self.stream, self.group, *gone)
        if not out:
            return self._read_own_pending(count)
        return out

    def _claim(self, count: int) -> list[Message]:
        resp: Any = self._client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=int(self._t.min_idle * 1000),
            start_id=self._claim_cursor,
            count=count,
        )
        cursor = resp[0]
        cursor_s = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if cursor_s in {"0-0", "0"}:
            # A full pass over the pending list is done; wait before the next one.
            self._claim_cursor = "0-0"
            self._next_claim = time.monotonic() + self._t.claim_interval
        else:
            self._claim_cursor = cursor_s
        out, gone = self._split(resp[1])
        if gone:
            self._client.xack(self.stream, self.group, *gone)
        return out

    @staticmethod
    def _split(entries: Sequence[Any]) -> tuple[list[Message], list[bytes]]:
        out: list[Message] = []
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if not fields:
                gone.append(entry_id)
                continue
            mid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            data = fields.get(b"e")
            if data is None and b"b" in fields:
                out += unframe(mid, fields[b"b"])
                continue
            out.append(Message(mid, data if data is not None else b""))
        return out, gone

    def _messages(self, resp: Any) -> list[Message]:
        if not resp:
            return []
        out, _ = self._split(resp[0][1])
        return out

    def ack(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        try:
            pipe = self._client.pipeline(transaction=False)
            for i in range(0, len(ids), _ACK_CHUNK):
                pipe.xack(self.stream, self.group, *ids[i : i + _ACK_CHUNK])
            pipe.execute()
        except redis.RedisError as exc:
            raise _wrap(exc, self._t.safe_url) from None

    def lag(self) -> int | None:
        try:
            groups = self._client.xinfo_groups(self.stream)
        except redis.ResponseError:
            return None  # no stream yet
        except redis.RedisError as exc:
            raise _wrap(exc, self._t.safe_url) from None
        for info in groups:
            name = info.get("name")
            if isinstance(name, bytes):
                name = name.decode()
            if name == self.group:
                lag = info.get("lag")
                pending = int(info.get("pending") or 0)
                return None if lag is None else int(lag) + pending
        return None

    def close(self) -> None:
        self._client.close()
