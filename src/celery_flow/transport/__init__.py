"""Broker transports behind one protocol; `from_url()` picks one by URL scheme."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery_flow.transport.base import (
    ConfigError,
    DeliveryUnknown,
    Message,
    Subscription,
    Transport,
    TransportError,
)

__all__ = [
    "ConfigError",
    "DeliveryUnknown",
    "Message",
    "Subscription",
    "Transport",
    "TransportError",
    "from_url",
    "redact_url",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
MEMORY_SCHEMES = frozenset({"memory"})
SUPPORTED = "redis://, rediss://, unix://, amqp://, amqps://, pyamqp:// or memory://"


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, for logs, errors and the health endpoint."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def scheme_of(url: str) -> str:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    # Celery accepts `redis+socket://` and `amqp+ssl://`-style variants less often; normalise the base.
    return scheme.split("+", 1)[0]


def from_url(url: str, prefix: str = "celery_flow", **options: Any) -> Transport:
    """The transport for `url`. Raises ConfigError with a one-line fix for an unknown scheme."""
    scheme = scheme_of(url)
    if scheme in REDIS_SCHEMES:
        from celery_flow.transport.redis import RedisTransport

        return RedisTransport(url, prefix=prefix, **options)
    if scheme in AMQP_SCHEMES:
        from celery_flow.transport.amqp import AmqpTransport

        return AmqpTransport(url, prefix=prefix, **options)
    if scheme in MEMORY_SCHEMES:
        from celery_flow.transport.memory import MemoryTransport

        return MemoryTransport(url, prefix=prefix, **options)
    raise ConfigError(
        f"unsupported broker URL {redact_url(url)!r}: use {SUPPORTED} "
        "(set --broker-url or CELERY_FLOW_BROKER_URL)"
    )
