"""Broker transports behind one protocol; `from_url()` picks one by URL scheme (transport.urls)."""

from __future__ import annotations

from typing import Any

from celery_flow.errors import ConfigError
from celery_flow.settings import DEFAULT_PREFIX
from celery_flow.transport.base import DeliveryUnknown, Message, Subscription, Transport, TransportError
from celery_flow.transport.urls import SUPPORTED, kind_of, redact_url, scheme_of

__all__ = [
    "ConfigError",
    "DeliveryUnknown",
    "Message",
    "Subscription",
    "Transport",
    "TransportError",
    "from_url",
    "redact_url",
    "scheme_of",
]


def from_url(url: str, prefix: str = DEFAULT_PREFIX, **options: Any) -> Transport:
    """The transport for `url`. Raises ConfigError with a one-line fix for an unknown scheme."""
    kind = kind_of(url)
    if kind == "redis":
        from celery_flow.transport.redis import RedisTransport

        return RedisTransport(url, prefix=prefix, **options)
    if kind == "amqp":
        from celery_flow.transport.amqp import AmqpTransport

        return AmqpTransport(url, prefix=prefix, **options)
    if kind == "sqs":
        from celery_flow.transport.sqs import SqsTransport  # imports boto3: only for sqs:// URLs

        return SqsTransport(url, prefix=prefix, **options)
    if kind == "memory":
        from celery_flow.transport.memory import MemoryTransport

        return MemoryTransport(url, prefix=prefix, **options)
    raise ConfigError(
        f"unsupported broker URL {redact_url(url)!r}: use {SUPPORTED} "
        "(set --broker-url or CELERY_FLOW_BROKER_URL)"
    )
