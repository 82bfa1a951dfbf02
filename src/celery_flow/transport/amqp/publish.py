"""`AmqpTransport`: the RabbitMQ transport's options and its publishing side.

Publishing (only ever from the tracking library's background thread): one connection per process,
re-created after a fork (the pid is checked on every batch and the parent's socket is never touched),
persistent messages (delivery_mode 2), and by default publisher confirms: the whole batch is written,
then one wait for the broker's (usually cumulative) acks, bounded by `confirm_timeout`. That costs one
round trip per batch, not per event, and it is what turns a broker that silently stops accepting
(memory/disk alarm, frozen node, half-open TCP) into an error instead of a hang. A failure before any
message was written raises TransportError (nothing was queued); once one was, a missing confirm, a lost
connection or a nack of part of the batch raises DeliveryUnknown, since RabbitMQ may still queue what
it received (a frozen node reads its socket when it resumes). While RabbitMQ has the connection
*blocked* (connection.blocked, a resource alarm) publish raises TransportError at once without writing,
and picks up connection.unblocked from the socket without blocking.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import amqp
from amqp import spec
from amqp.exceptions import NotFound, PreconditionFailed

from celery_flow.errors import ConfigError
from celery_flow.settings import DEFAULT_PREFIX
from celery_flow.transport.amqp.connection import (
    AMQP_ERRORS,
    DEFAULT_HEARTBEAT,
    close_politely,
    connect,
    describe,
    discard,
    drain_nowait,
    log,
    parse_amqp_url,
)
from celery_flow.transport.amqp.consume import DEFAULT_MAX_BACKOFF, AmqpSubscription
from celery_flow.transport.amqp.topology import exchange_name, queue_arguments, queue_name
from celery_flow.transport.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAXLEN,
    DEFAULT_SOCKET_TIMEOUT,
    NDJSON,
    DeliveryUnknown,
    TransportError,
    frames,
)
from celery_flow.transport.urls import redact_url

__all__ = ["AmqpTransport"]

DEFAULT_CONFIRM_TIMEOUT = 1.0
_PUBLISH_ARGSIG = "Bssbb"


class AmqpTransport:
    """Transport over one fanout exchange. Options come from `from_url(url, prefix, **options)`."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = DEFAULT_MAXLEN,
        ttl: float | None = None,
        confirm: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        confirm_timeout: float = DEFAULT_CONFIRM_TIMEOUT,
        heartbeat: float = DEFAULT_HEARTBEAT,
        prefetch: int | None = None,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        ssl: bool | Mapping[str, Any] | None = None,
    ) -> None:
        if maxlen <= 0:
            raise ConfigError(f"maxlen must be positive, got {maxlen}")
        if ttl is not None and ttl < 0:
            raise ConfigError(f"ttl must be >= 0 seconds (0 turns the age bound off), got {ttl}")
        if prefetch is not None and prefetch <= 0:
            raise ConfigError(f"prefetch must be positive, got {prefetch}")
        self.url = url
        self.safe_url = redact_url(url)
        self.params = parse_amqp_url(url)
        self.prefix = prefix
        self.exchange = exchange_name(prefix)
        self.queue = queue_name(prefix)
        self.maxlen = maxlen
        self.ttl = ttl
        self.arguments = queue_arguments(maxlen, ttl)
        self.confirm = confirm
        # URL query parameters win over defaults, like in Celery's broker URLs.
        self.connect_timeout = float(self.params.options.get("connect_timeout", connect_timeout))
        self.socket_timeout = socket_timeout
        self.confirm_timeout = confirm_timeout
        self.heartbeat = float(self.params.options.get("heartbeat", heartbeat))
        self.prefetch = prefetch
        self.max_backoff = max_backoff
        self.ssl = dict(ssl) if isinstance(ssl, Mapping) else ssl
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._conn: Any = None
        self._channel: Any = None
        self._blocked: str | None = None
        self._seq = 0  # publish sequence number on the confirm channel (the broker's delivery tag)
        self._unconfirmed: set[int] = set()
        self._nacked = 0
        self._returned = 0
        # Connections inherited from a parent process: referenced, never used or closed (closing
        # would shut down the socket the parent still uses).
        self._inherited: list[Any] = []

    # ---- connection ---------------------------------------------------------------------------

    def connect_options(self, name: str, heartbeat: float) -> dict[str, Any]:
        return {
            "connect_timeout": self.connect_timeout,
            "socket_timeout": self.socket_timeout,
            "heartbeat": heartbeat,
            "ssl": self.ssl,
            "name": name,
        }

    def _check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            # Forked (prefork pool child): the lock may have been held by the parent's publisher
            # thread, which does not exist here, and the socket is the parent's.
            self._pid = pid
            self._lock = threading.Lock()
            if self._conn is not None:
                self._inherited.append(self._conn)
            self._conn = self._channel = None
            self._blocked = None
            self._unconfirmed = set()

    def _on_blocked(self, reason: str) -> None:
        self._blocked = reason or "connection blocked"
        log.warning(
            "RabbitMQ %s blocked publishing (%s): events are dropped until it unblocks",
            self.safe_url,
            self._blocked,
        )

    def _on_unblocked(self) -> None:
        if self._blocked is not None:
            log.info("RabbitMQ %s unblocked publishing", self.safe_url)
        self._blocked = None

    def _publisher(self) -> Any:
        """The process's publishing channel, connecting and declaring the topology if needed."""
        if self._channel is not None:
            return self._channel
        conn = connect(
            self.params,
            on_blocked=self._on_blocked,
            on_unblocked=self._on_unblocked,
            **self.connect_options(f"celery-flow publisher {socket.gethostname()}:{os.getpid()}", 0),
        )
        try:
            channel = conn.channel()
            channel.exchange_declare(self.exchange, "fanout", durable=True, auto_delete=False)
            channel = self._ensure_default_queue(conn, channel)
            # Published as mandatory: an event no queue takes (the queue was deleted) comes back.
            channel.events["basic_return"].add(self._on_return)
            if self.confirm:
                channel.confirm_select()
                channel.events["basic_ack"].add(self._on_ack)
                channel.events["basic_nack"].add(self._on_nack)
        except BaseException:
            discard(conn)
            raise
        self._conn, self._channel = conn, channel
        self._seq, self._unconfirmed, self._nacked, self._returned = 0, set(), 0, 0
        return channel

    def _ensure_default_queue(self, conn: Any, channel: Any) -> Any:
        """Declare the default group's queue only if missing: whoever declared it owns its retention."""
        try:
            channel.queue_declare(self.queue, passive=True)
        except NotFound:
            channel = conn.channel()  # a failed passive declare closes the channel
            try:
                channel.queue_declare(self.queue, durable=True, auto_delete=False, arguments=self.arguments)
            except PreconditionFailed:  # another process declared it a moment ago, differently
                channel = conn.channel()
        channel.queue_bind(self.queue, self.exchange, routing_key="")
        return channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self._returned += 1

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        before = len(self._unconfirmed)
        self._on_ack(delivery_tag, multiple)
        self._nacked += before - len(self._unconfirmed)

    def _reset(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        self._blocked = None
        self._unconfirmed = set()
        if conn is not None:
            discard(conn)

    def _wrap(self, exc: BaseException) -> TransportError:
        return TransportError(f"amqp {self.safe_url}: {describe(exc, self.params)}")

    # ---- publishing ---------------------------------------------------------------------------

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        self._check_fork()
        with self._lock:
            sent = 0  # messages written whole to the socket: from the first one on, the outcome is unknown
            try:
                channel = self._publisher()
                conn = self._conn
                # Cheap non-blocking read: connection.blocked/unblocked and late confirms.
                drain_nowait(conn)
                if self._blocked is not None:
                    raise TransportError(
                        f"amqp {self.safe_url}: RabbitMQ is blocking publishers ({self._blocked}: "
                        "a memory or disk alarm); events are dropped until it clears"
                    )
                exchange = self.exchange
                for data, events in frames(payloads):
                    # A batch of events is one message of newline-delimited JSON (base.frames).
                    message = (
                        amqp.Message(data, delivery_mode=2)
                        if events == 1
                        else amqp.Message(data, delivery_mode=2, content_type=NDJSON)
                    )
                    # send_method directly: basic_publish would poll the socket once per message.
                    channel.send_method(
                        spec.Basic.Publish, _PUBLISH_ARGSIG, (0, exchange, "", True, False), message
                    )
                    sent += 1
                if self.confirm:
                    first = self._seq + 1
                    self._seq += sent
                    self._unconfirmed.update(range(first, self._seq + 1))
                    self._wait_confirms(conn, sent)
                if self._returned:
                    # Someone deleted the queue: reconnecting declares it again; the caller retries.
                    returned, self._returned = self._returned, 0
                    raise TransportError(
                        f"amqp {self.safe_url}: {returned} message(s) reached no queue (was {self.queue!r} "
                        "deleted?); it is declared again on the next attempt"
                    )
            except TransportError:
                if self._blocked is None:
                    self._reset()
                raise
            except AMQP_ERRORS as exc:
                self._reset()
                if sent:
                    raise DeliveryUnknown(
                        f"{self._wrap(exc)}; after writing {sent} message(s), which RabbitMQ may still queue"
                    ) from None
                raise self._wrap(exc) from None

    def _wait_confirms(self, conn: Any, sent: int) -> None:
        deadline = time.monotonic() + self.confirm_timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = f"blocked ({self._blocked})" if self._blocked else "no confirm"
                raise DeliveryUnknown(
                    f"amqp {self.safe_url}: {state} for {len(self._unconfirmed)} message(s) within "
                    f"{self.confirm_timeout:g}s; RabbitMQ may still queue them"
                )
            try:
                conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._nacked:
            nacked, self._nacked = self._nacked, 0
            # A nack of part of the batch means the rest was queued.
            error = TransportError if nacked >= sent else DeliveryUnknown
            raise error(f"amqp {self.safe_url}: broker rejected {nacked} of {sent} message(s) (basic.nack)")

    def ping(self) -> None:
        self._check_fork()
        with self._lock:
            try:
                channel = self._publisher()
                channel.exchange_declare(self.exchange, "fanout", passive=True)
            except AMQP_ERRORS as exc:
                self._reset()
                raise self._wrap(exc) from None

    @property
    def blocked(self) -> str | None:
        """Why RabbitMQ is blocking this process's publisher connection, or None."""
        return self._blocked

    def subscribe(self, group: str, consumer: str) -> AmqpSubscription:
        return AmqpSubscription(self, group, consumer)

    def close(self) -> None:
        self._check_fork()
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
            if conn is not None:
                close_politely(conn)
