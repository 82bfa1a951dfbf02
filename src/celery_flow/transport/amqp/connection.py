"""Connecting to RabbitMQ: what an amqp:// URL says, opening and dropping a py-amqp connection, and a failure
told in one line that says what to check. Nothing is retried here: the caller decides."""

from __future__ import annotations

import logging
import ssl as ssl_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import amqp
from amqp.exceptions import AMQPError, MessageNacked

from celery_flow.errors import ConfigError
from celery_flow.transport.urls import SCHEMES, redact_url

__all__ = [
    "AMQP_ERRORS",
    "AmqpParams",
    "close_politely",
    "connect",
    "describe",
    "discard",
    "drain_nowait",
    "log",
    "parse_amqp_url",
]

#: The RabbitMQ transport's one logger, for every module of the package.
log = logging.getLogger("celery_flow.transport.amqp")

# Consumers negotiate heartbeats so a dead broker or a half-open TCP connection is noticed; the
# publisher does not (it may sit idle for hours, and a dead connection shows up as a failed confirm).
DEFAULT_HEARTBEAT = 30
#: What a lost, refused or failing connection raises from py-amqp.
AMQP_ERRORS: tuple[type[BaseException], ...] = (OSError, AMQPError, MessageNacked)
_NUMERIC_URL_OPTIONS = frozenset({"connect_timeout", "heartbeat"})
# TLS files for amqps:// with a private CA or client certificates, as URL query parameters.
_TLS_URL_OPTIONS = frozenset({"ca_certs", "certfile", "keyfile"})
_URL_OPTIONS = _NUMERIC_URL_OPTIONS | _TLS_URL_OPTIONS


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


def describe(exc: BaseException, params: AmqpParams) -> str:
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


def connect(
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
        discard(conn)
        raise
    return conn


def discard(conn: Any) -> None:
    """Drop a connection without waiting for the broker (it may be the reason we drop it)."""
    try:
        conn.collect()
    except Exception:  # already half torn down: nothing more to release
        log.debug("collecting a dead AMQP connection failed", exc_info=True)


def close_politely(conn: Any) -> None:
    """Close politely (the broker requeues unacked messages at once), or just drop the socket."""
    try:
        conn.close()
    except Exception:
        discard(conn)


def drain_nowait(conn: Any, stop: Callable[[], bool] | None = None) -> None:
    """Process every frame already received without blocking (deliveries, acks, blocked/unblocked)."""
    while stop is None or not stop():
        try:
            conn.drain_events(timeout=0)
        except TimeoutError:
            return
