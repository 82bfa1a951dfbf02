"""`AmqpSubscription`: one competing consumer on a consumer group's durable RabbitMQ queue.

basic.consume with a prefetch of twice the read batch, so the next batch is already on its way while the
store commits the current one; messages are acknowledged only after the store committed them,
cumulatively (one `multiple` ack per batch) where possible. Anything unacknowledged when a consumer dies
(even SIGKILL) is redelivered by RabbitMQ to another member. Delivery tags restart at 1 on every channel,
so a message id is `{generation}.{delivery_tag}` with a process-wide generation per connection:
acknowledging an id from before a reconnect is dropped instead of acknowledging whatever message now
carries that tag. A lost connection raises TransportError from the call that noticed it; the next read()
reconnects (capped exponential backoff from 0.2 s to `max_backoff`). Consumers negotiate heartbeats
(30 s) and send them from read(), so a vanished broker or a half-open connection is noticed and RabbitMQ
hands a dead consumer's messages to the others.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from amqp.exceptions import NotFound, PreconditionFailed

from celery_flow.transport.amqp.connection import (
    AMQP_ERRORS,
    close_politely,
    connect,
    describe,
    discard,
    drain_nowait,
    log,
)
from celery_flow.transport.amqp.topology import queue_name
from celery_flow.transport.base import NDJSON, Message, TransportError, unframe

if TYPE_CHECKING:
    from celery_flow.transport.amqp.publish import AmqpTransport

__all__ = ["AmqpSubscription"]

DEFAULT_MAX_BACKOFF = 5.0
_MIN_BACKOFF = 0.2

# Process-wide, so ids from a closed subscription can never match ids of a newer one either.
_generations = itertools.count(1)
_warned_mismatch: set[str] = set()


class AmqpSubscription:
    """One competing consumer on a group's durable queue."""

    def __init__(self, transport: AmqpTransport, group: str, consumer: str) -> None:
        self._t = transport
        self.group = group
        self.consumer = consumer
        self.queue = queue_name(transport.prefix, group)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._channel: Any = None
        self._admin: Any = None  # a second channel for passive declares (a 404 closes a channel)
        self._gen = ""
        self._consuming = False
        self._cancelled = False
        self._prefetch = transport.prefetch
        self._buffer: deque[Message] = deque()
        self._outstanding: set[int] = set()  # delivery tags received (buffered or handed out), not acked
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._closed = False
        #: Set when the queue exists with other retention arguments than this transport's (see _open).
        self.retention_mismatch: str | None = None
        # Connect now: a broker that is down or a retention mismatch shows up at subscribe time.
        try:
            self._open()
        except AMQP_ERRORS as exc:
            raise self._failed(exc) from None

    # ---- connection ---------------------------------------------------------------------------

    def _open(self) -> None:
        t = self._t
        conn = connect(t.params, **t.connect_options(f"celery-flow consumer {self.consumer}", t.heartbeat))
        try:
            channel = conn.channel()
            channel.exchange_declare(t.exchange, "fanout", durable=True, auto_delete=False)
            try:
                channel.queue_declare(self.queue, durable=True, auto_delete=False, arguments=t.arguments)
            except PreconditionFailed as exc:
                # Keep consuming what is there (losing events over a retention setting would be
                # worse), and say once, in one line, how to apply the requested retention.
                channel = conn.channel()  # the failed declare closed the channel
                channel.queue_declare(self.queue, passive=True)
                self.retention_mismatch = (
                    f"RabbitMQ queue {self.queue!r} on {t.safe_url} exists with other retention arguments "
                    f"than {t.arguments} ({exc.reply_text}); consuming it as it is. To apply yours, delete "
                    f"it (`rabbitmqctl delete_queue {self.queue} -p {t.params.vhost}`, its events are lost) "
                    "or pass the maxlen/ttl it was created with"
                )
                if self.queue not in _warned_mismatch:
                    _warned_mismatch.add(self.queue)
                    log.warning("%s", self.retention_mismatch)
            channel.queue_bind(self.queue, t.exchange, routing_key="")
        except BaseException:
            discard(conn)
            raise
        self._conn, self._channel, self._admin = conn, channel, None
        self._gen = str(next(_generations))
        self._consuming = self._cancelled = False
        self._buffer.clear()
        self._outstanding.clear()

    def _start_consuming(self, count: int) -> None:
        if self._prefetch is None:
            self._prefetch = max(2 * count, 10)
        channel = self._channel
        channel.basic_qos(0, min(self._prefetch, 65535), False)
        channel.basic_consume(
            self.queue,
            consumer_tag=f"{self.consumer}#{self._gen}",
            callback=self._on_message,
            on_cancel=self._on_cancel,
        )
        self._consuming = True

    def _on_message(self, msg: Any) -> None:
        tag = int(msg.delivery_info["delivery_tag"])
        body = msg.body
        data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
        self._outstanding.add(tag)
        mid = f"{self._gen}.{tag}"
        if msg.properties.get("content_type") == NDJSON:
            self._buffer.extend(unframe(mid, data))
        else:
            self._buffer.append(Message(mid, data))

    def _on_cancel(self, consumer_tag: str) -> None:
        # The broker cancelled us (queue deleted): reconnect, which declares the queue again.
        self._cancelled = True

    def _drop(self) -> None:
        """Forget the connection; its unacknowledged messages go back to the queue for any member."""
        conn, self._conn, self._channel, self._admin = self._conn, None, None, None
        self._buffer.clear()
        self._outstanding.clear()
        if conn is not None:
            discard(conn)

    def _failed(self, exc: BaseException) -> TransportError:
        self._drop()
        self._backoff = min(max(self._backoff * 2, _MIN_BACKOFF), self._t.max_backoff)
        self._retry_at = time.monotonic() + self._backoff
        self._last_error = describe(exc, self._t.params)
        return TransportError(f"amqp {self._t.safe_url}: {self._last_error}")

    def _ensure_connected(self, deadline: float) -> None:
        if self._conn is not None:
            return
        now = time.monotonic()
        if now < self._retry_at:
            # Back off between reconnects, but never past the caller's deadline.
            time.sleep(max(0.0, min(self._retry_at, deadline) - now))
            if time.monotonic() < self._retry_at:
                raise TransportError(
                    f"amqp {self._t.safe_url}: {self._last_error}; reconnecting in "
                    f"{self._retry_at - time.monotonic():.1f}s"
                )
        self._open()
        self._backoff = 0.0

    # ---- the Subscription protocol --------------------------------------------------------------

    def read(self, count: int, timeout: float) -> list[Message]:
        count = max(1, count)
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            if self._closed:
                return []
            try:
                if self._cancelled:
                    self._drop()
                self._ensure_connected(deadline)
                if not self._consuming:
                    self._start_consuming(count)
                conn = self._conn
                conn.heartbeat_tick()
                drain_nowait(conn, lambda: len(self._buffer) >= count)
                # Wake up in time to send heartbeats when they were negotiated.
                beat = float(conn.heartbeat or 0) / 4
                while not self._buffer and not self._cancelled:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:
                        conn.drain_events(timeout=min(remaining, beat) if beat > 0 else remaining)
                    except TimeoutError:
                        conn.heartbeat_tick()
                        continue
                    # More usually follows the first delivery in the same TCP read: take it too.
                    drain_nowait(conn, lambda: len(self._buffer) >= count)
            except TransportError:
                raise
            except AMQP_ERRORS as exc:
                raise self._failed(exc) from None
            buffer = self._buffer
            out = [buffer.popleft() for _ in range(min(count, len(buffer)))]
            # Never split a batch message across reads: its one ack covers all of its events.
            while out and buffer and buffer[0].id == out[-1].id:
                out.append(buffer.popleft())
            return out

    def ack(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        with self._lock:
            tags: set[int] = set()
            stale = 0
            for message_id in ids:
                gen, _, tag = message_id.partition(".")
                if gen == self._gen and tag.isdigit() and int(tag) in self._outstanding:
                    tags.add(int(tag))
                else:
                    stale += 1
            if stale:
                # From before a reconnect: RabbitMQ already requeued them and this connection's tags
                # mean other messages now. They come back and are applied again (idempotent per id).
                log.debug("dropping %d acknowledgement(s) from an earlier connection", stale)
            if not tags or self._channel is None:
                return
            try:
                self._ack_tags(tags)
            except AMQP_ERRORS as exc:
                raise self._failed(exc) from None

    def _ack_tags(self, tags: set[int]) -> None:
        # One cumulative ack covers the longest run of outstanding tags that are all being acked.
        upto: int | None = None
        for tag in sorted(self._outstanding):
            if tag not in tags:
                break
            upto = tag
        channel = self._channel
        if upto is not None:
            channel.basic_ack(upto, multiple=True)
            self._outstanding = {t for t in self._outstanding if t > upto}
        for tag in sorted(t for t in tags if upto is None or t > upto):
            channel.basic_ack(tag, multiple=False)
            self._outstanding.discard(tag)

    def lag(self) -> int | None:
        """Messages ready in the queue plus those this member holds unacknowledged.

        AMQP tells a client only the ready count; other members' unacknowledged messages are not
        visible without the management API.
        """
        with self._lock:
            if self._conn is None:
                return None
            try:
                if self._admin is None:
                    self._admin = self._conn.channel()
                _, ready, _ = self._admin.queue_declare(self.queue, passive=True)
            except NotFound:
                self._admin = None
                return None
            except AMQP_ERRORS as exc:
                raise self._failed(exc) from None
            return int(ready) + len(self._outstanding)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn, self._channel, self._admin = self._conn, None, None, None
            self._buffer.clear()
            self._outstanding.clear()
            if conn is not None:
                close_politely(conn)
