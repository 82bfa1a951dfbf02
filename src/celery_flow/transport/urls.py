"""Broker URLs: which schemes name which transport, and how a URL is shown without its password."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["SUPPORTED", "TransportKind", "kind_of", "redact_url", "scheme_of", "with_sqs_options"]

#: What an `sqs://` URL takes from Celery's `broker_transport_options` (kombu's names).
SQS_TRANSPORT_OPTIONS = ("region", "is_secure")

TransportKind = Literal["redis", "amqp", "sqs", "memory"]

SCHEMES: dict[str, TransportKind] = {
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "amqp": "amqp",
    "amqps": "amqp",
    "pyamqp": "amqp",
    "sqs": "sqs",
    "memory": "memory",
}
#: The schemes as a user reads them in an error message.
SUPPORTED = ", ".join(f"{scheme}://" for scheme in list(SCHEMES)[:-1]) + f" or {list(SCHEMES)[-1]}://"


def scheme_of(url: str) -> str:
    """The URL's base scheme, lowercase: `amqp+ssl://h` → `amqp`, `host:6379` → `` (none)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return scheme.split("+", 1)[0]


def kind_of(url: str) -> TransportKind | None:
    """Which transport serves `url`, or None when no transport does."""
    return SCHEMES.get(scheme_of(url))


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


def with_sqs_options(url: str, transport_options: Mapping[str, Any]) -> str:
    """`url` with the SQS options of Celery's `broker_transport_options` (region, is_secure) added to
    its query, unless the URL names them itself."""
    # Not urlunsplit: it writes `sqs://` (no host) back as `sqs:`.
    base, _, raw_query = url.partition("?")
    query = dict(parse_qsl(raw_query))
    for key in SQS_TRANSPORT_OPTIONS:
        value = transport_options.get(key)
        if value is not None and key not in query:
            query[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{base}?{urlencode(query)}" if query else base
