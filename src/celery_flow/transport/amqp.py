"""RabbitMQ transport over py-amqp: a durable fanout exchange `{prefix}.events` and one durable queue per
consumer group (DESIGN.md §3).

Topology. The exchange is *fanout*: it belongs to celery-flow alone, so there is nothing to route, and
every queue bound to it (one per consumer group) gets every event, which is what a Redis consumer group
gives. The default group's queue is `{prefix}.events` (exchange and queue names live in separate
namespaces); another group `g` gets `{prefix}.events.g`. All `consume` processes of one group share its
queue as competing consumers. The publisher declares the default queue too, so events published before
any server ever ran are kept (within the retention bound) instead of being dropped by an exchange with no
queue; a non-default group only sees events published after it first subscribed.

Retention. The queue is a buffer between the user's processes and the server, never the history: it is
declared with `x-max-length` (= `maxlen` messages) and `x-max-length-bytes` (= `maxlen` KiB; a message
is one event or a batch of up to 256 as newline-delimited JSON, content type `application/x-ndjson`,
see `base.frames`), oldest dropped first (`x-overflow: drop-head`), and
`x-message-ttl` (= `ttl`, default one day like CELERY_FLOW_TTL; `ttl=0` turns the age bound off), so an
absent server can never fill the broker. Queue arguments cannot change once declared (RabbitMQ answers
PRECONDITION_FAILED): the publisher only declares a queue that does not exist yet, and the consumer,
finding the queue declared with other arguments, consumes it as it is and logs one line naming the fix
(delete the queue, or use the options it was created with). A retention setting therefore never stops
events flowing, in either direction. Events are published as mandatory: if the queue is deleted (say,
to change its retention) while no server runs, the first batch that reaches no queue comes back, the
publish fails (the publisher keeps the batch and retries) and the reconnect declares the queue again.

Publishing (only ever from the tracking library's background thread): one connection per process,
re-created after a fork (the pid is checked on every batch and the parent's socket is never touched),
persistent messages (delivery_mode 2), and by default publisher confirms: the whole batch is written,
then one wait for the broker's (usually cumulative) acks, bounded by `confirm_timeout`. That costs one
round trip per batch, not per event, and it is what turns a broker that silently stops accepting
(memory/disk alarm, frozen node, half-open TCP) into a TransportError the publisher counts. Connect,
socket and confirm timeouts are about a second each and nothing is retried here. While RabbitMQ has
the connection *blocked* (connection.blocked, a resource alarm) publish raises TransportError at once
without writing, and picks up connection.unblocked from the socket without blocking.

Consuming: basic.consume with a prefetch of twice the read batch, so the next batch is already on its
way while the store commits the current one; messages are acknowledged only after the store committed
them, cumulatively (one `multiple` ack per batch) where possible. Anything unacknowledged when a
consumer dies (even SIGKILL) is redelivered by RabbitMQ to another member. Delivery tags restart at 1 on
every channel, so a message id is `{generation}.{delivery_tag}` with a process-wide generation per
connection: acknowledging an id from before a reconnect is dropped instead of acknowledging whatever
message now carries that tag. A lost connection raises TransportError from the call that noticed it;
the next read() reconnects (capped exponential backoff from 0.2 s to `max_backoff`). Consumers negotiate
heartbeats (30 s) and send them from read(), so a vanished broker or a half-open connection is noticed
and RabbitMQ hands a dead consumer's messages to the others.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import ssl as ssl_module
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import amqp
from amqp import spec
from amqp.exceptions import AMQPError, MessageNacked, NotFound, PreconditionFailed

from celery_flow.errors import ConfigError
from celery_flow.settings import DEFAULT_GROUP, DEFAULT_PREFIX, DEFAULT_TTL
from celery_flow.transport.base import NDJSON, Message, TransportError, frames, unframe
from celery_flow.transport.urls import SCHEMES, redact_url

__all__ = [
    "AmqpParams",
    "AmqpSubscription",
    "AmqpTransport",
    "exchange_name",
    "parse_amqp_url",
    "queue_arguments",
    "queue_name",
]

log = logging.getLogger("celery_flow.transport.amqp")

DEFAULT_MAXLEN = 100_000
DEFAULT_CONNECT_TIMEOUT = 1.0
DEFAULT_SOCKET_TIMEOUT = 1.0
DEFAULT_CONFIRM_TIMEOUT = 1.0
# Consumers negotiate heartbeats so a dead broker or a half-open TCP connection is noticed; the
# publisher does not (it may sit idle for hours, and a dead connection shows up as a failed confirm).
DEFAULT_HEARTBEAT = 30
DEFAULT_MAX_BACKOFF = 5.0
_MIN_BACKOFF = 0.2
_PUBLISH_ARGSIG = "Bssbb"
_BYTES_PER_EVENT = 1024
_ERRORS: tuple[type[BaseException], ...] = (OSError, AMQPError, MessageNacked)
_NUMERIC_URL_OPTIONS = frozenset({"connect_timeout", "heartbeat"})
# TLS files for amqps:// with a private CA or client certificates, as URL query parameters.
_TLS_URL_OPTIONS = frozenset({"ca_certs", "certfile", "keyfile"})
_URL_OPTIONS = _NUMERIC_URL_OPTIONS | _TLS_URL_OPTIONS

# Process-wide, so ids from a closed subscription can never match ids of a newer one either.
_generations = itertools.count(1)
_warned_mismatch: set[str] = set()


def exchange_name(prefix: str) -> str:
    return f"{prefix}.events"


def queue_name(prefix: str, group: str = DEFAULT_GROUP) -> str:
    return f"{prefix}.events" if group == DEFAULT_GROUP else f"{prefix}.events.{group}"


def queue_arguments(maxlen: int, ttl: float | None) -> dict[str, Any]:
    """The retention arguments every declaration of an events queue uses (they must match exactly)."""
    # A message carries one event or a batch of up to 256 (base.frames), so a count alone no longer
    # bounds the events kept: the byte bound (maxlen x 1 KiB, about what maxlen single events took)
    # keeps the queue's footprint where it was; the count still caps a flood of lone events.
    args: dict[str, Any] = {
        "x-max-length": int(maxlen),
        "x-max-length-bytes": int(maxlen) * _BYTES_PER_EVENT,
        "x-overflow": "drop-head",
    }
    effective = DEFAULT_TTL if ttl is None else ttl
    if effective > 0:
        args["x-message-ttl"] = int(effective * 1000)
    return args


@dataclass(frozen=True)
class AmqpParams:
    """What an amqp:// URL says, normalised (pyamqp:// is amqp://; amqps:// means TLS on 5671)."""

    host: str
    port: int
    userid: str
    password: str
    vhost: str
    tls: bool
    options: Mapping[str, str]

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_amqp_url(url: str) -> AmqpParams:
    """Parse like Celery/kombu do: `amqp://user:pass@host:port/vhost`; `/` or `//` is the vhost `/`."""
    safe = redact_url(url)
    fix = "use amqp://user:password@host:5672/vhost (amqps:// for TLS)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"bad RabbitMQ URL {safe!r} ({exc}): {fix}") from None
    scheme = parts.scheme.lower().split("+", 1)
    tls = scheme[0] == "amqps" or (len(scheme) > 1 and scheme[1] == "ssl")
    if SCHEMES.get(scheme[0]) != "amqp":
        raise ConfigError(f"bad RabbitMQ URL {safe!r}: unsupported scheme {parts.scheme!r}: {fix}")
    path = parts.path
    vhost = unquote(path[1:]) if len(path) > 1 else "/"
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - _URL_OPTIONS)
    if unknown:
        # Celery broker URLs often carry kombu options; they do not apply here, so say so once.
        log.warning("ignoring unsupported option(s) %s in %s", ", ".join(unknown), safe)
    for key in _NUMERIC_URL_OPTIONS & set(options):
        try:
            float(options[key])
        except ValueError:
            raise ConfigError(f"bad RabbitMQ URL {safe!r}: {key}={options[key]!r} is not a number") from None
    return AmqpParams(
        host=parts.hostname or "localhost",
        port=port or (5671 if tls else 5672),
        userid=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password is not None else "guest",
        vhost=vhost,
        tls=tls,
        options={k: v for k, v in options.items() if k in _URL_OPTIONS},
    )


def _describe(exc: BaseException, params: AmqpParams) -> str:
    """A one-line reason that says what to check, not just the exception's class."""
    if isinstance(exc, TimeoutError):
        return f"no answer within the timeout from {params.hostport} (broker frozen, overloaded or not AMQP?)"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {params.hostport} (is RabbitMQ running and listening there?)"
    code = getattr(exc, "code", None)
    if code == 403:
        return f"login refused for user {params.userid!r}: check the user and password in the URL"
    if code == 530:
        return (
            f"vhost {params.vhost!r} not found or not allowed for {params.userid!r}: create it "
            f"(rabbitmqctl add_vhost) and grant permissions, or fix the URL's path"
        )
    return f"{type(exc).__name__}: {exc}"


def _connect(
    params: AmqpParams,
    *,
    connect_timeout: float,
    socket_timeout: float,
    heartbeat: float,
    ssl: Any,
    name: str,
    on_blocked: Callable[[str], None] | None = None,
    on_unblocked: Callable[[], None] | None = None,
) -> Any:
    """An open py-amqp connection; raises the underlying error (callers wrap it)."""
    tls: Any = False
    if params.tls or ssl:
        # Verify the broker's certificate (system CAs unless `ca_certs`) and its host name by default.
        tls = {"server_hostname": params.host, "cert_reqs": ssl_module.CERT_REQUIRED}
        tls.update({k: v for k, v in params.options.items() if k in _TLS_URL_OPTIONS})
        if isinstance(ssl, Mapping):
            tls.update(ssl)
    conn = amqp.Connection(
        host=params.hostport,
        userid=params.userid,
        password=params.password,
        virtual_host=params.vhost,
        ssl=tls,
        connect_timeout=connect_timeout,
        read_timeout=socket_timeout,
        write_timeout=socket_timeout,
        heartbeat=heartbeat,
        client_properties={"connection_name": name},
        on_blocked=on_blocked,
        on_unblocked=on_unblocked,
    )
    try:
        conn.connect()
    except BaseException:
        _discard(conn)
        raise
    return conn


def _discard(conn: Any) -> None:
    """Drop a connection without waiting for the broker (it may be the reason we drop it)."""
    try:
        conn.collect()
    except Exception:  # already half torn down: nothing more to release
        log.debug("collecting a dead AMQP connection failed", exc_info=True)


def _close(conn: Any) -> None:
    """Close politely (the broker requeues unacked messages at once), or just drop the socket."""
    try:
        conn.close()
    except Exception:
        _discard(conn)


def _drain_nowait(conn: Any, stop: Callable[[], bool] | None = None) -> None:
    """Process every frame already received without blocking (deliveries, acks, blocked/unblocked)."""
    while stop is None or not stop():
        try:
            conn.drain_events(timeout=0)
        except TimeoutError:
            return


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
        conn = _connect(
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
            _discard(conn)
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
            _discard(conn)

    def _wrap(self, exc: BaseException) -> TransportError:
        return TransportError(f"amqp {self.safe_url}: {_describe(exc, self.params)}")

    # ---- publishing ---------------------------------------------------------------------------

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        self._check_fork()
        with self._lock:
            try:
                channel = self._publisher()
                conn = self._conn
                # Cheap non-blocking read: connection.blocked/unblocked and late confirms.
                _drain_nowait(conn)
                if self._blocked is not None:
                    raise TransportError(
                        f"amqp {self.safe_url}: RabbitMQ is blocking publishers ({self._blocked}: "
                        "a memory or disk alarm); events are dropped until it clears"
                    )
                exchange = self.exchange
                sent = 0
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
                    self._wait_confirms(conn)
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
            except _ERRORS as exc:
                self._reset()
                raise self._wrap(exc) from None

    def _wait_confirms(self, conn: Any) -> None:
        deadline = time.monotonic() + self.confirm_timeout
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                state = f"blocked ({self._blocked})" if self._blocked else "no confirm"
                raise TransportError(
                    f"amqp {self.safe_url}: {state} for {len(self._unconfirmed)} message(s) within "
                    f"{self.confirm_timeout:g}s; treating them as dropped"
                )
            try:
                conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._nacked:
            nacked, self._nacked = self._nacked, 0
            raise TransportError(f"amqp {self.safe_url}: broker rejected {nacked} message(s) (basic.nack)")

    def ping(self) -> None:
        self._check_fork()
        with self._lock:
            try:
                channel = self._publisher()
                channel.exchange_declare(self.exchange, "fanout", passive=True)
            except _ERRORS as exc:
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
                _close(conn)


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
        except _ERRORS as exc:
            raise self._failed(exc) from None

    # ---- connection ---------------------------------------------------------------------------

    def _open(self) -> None:
        t = self._t
        conn = _connect(t.params, **t.connect_options(f"celery-flow consumer {self.consumer}", t.heartbeat))
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
            _discard(conn)
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
            _discard(conn)

    def _failed(self, exc: BaseException) -> TransportError:
        self._drop()
        self._backoff = min(max(self._backoff * 2, _MIN_BACKOFF), self._t.max_backoff)
        self._retry_at = time.monotonic() + self._backoff
        self._last_error = _describe(exc, self._t.params)
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
                _drain_nowait(conn, lambda: len(self._buffer) >= count)
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
                    _drain_nowait(conn, lambda: len(self._buffer) >= count)
            except TransportError:
                raise
            except _ERRORS as exc:
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
            except _ERRORS as exc:
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
            except _ERRORS as exc:
                raise self._failed(exc) from None
            return int(ready) + len(self._outstanding)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn, self._channel, self._admin = self._conn, None, None, None
            self._buffer.clear()
            self._outstanding.clear()
            if conn is not None:
                _close(conn)
