"""Server settings resolved once, the same way for the CLI, `--reload` and `create_app_from_env()`.

Precedence: explicit argument, then CELERY_FLOW_* environment variable, then default (settings.env_value).
Every bad value raises ConfigError with one line naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from celery_flow.errors import ConfigError
from celery_flow.settings import (
    DEFAULT_PREFIX,
    DEFAULT_TTL,
    env_value,
    parse_bool,
    parse_duration,
    parse_positive_int,
)
from celery_flow.store import default_store_url


def parse_credentials(raw: str) -> tuple[str, str]:
    """Split `user:pass` (--basic-auth, CELERY_FLOW_BASIC_AUTH); the password may contain ':'."""
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise ConfigError(
            "basic auth must look like user:password (set --basic-auth or CELERY_FLOW_BASIC_AUTH)"
        )
    return user, password


@dataclass(frozen=True)
class ServerConfig:
    broker_url: str | None
    store_url: str
    prefix: str
    ttl: float | None
    max_tasks: int | None
    basic_auth: tuple[str, str] | None
    embedded_consumer: bool = True


def resolve(
    broker_url: str | None = None,
    store: str | None = None,
    prefix: str | None = None,
    ttl: str | None = None,
    max_tasks: int | None = None,
    basic_auth: str | None = None,
    embedded_consumer: bool | None = None,
) -> ServerConfig:
    """Arguments first, then CELERY_FLOW_* variables, then defaults. Raises ConfigError."""
    try:
        explicit_ttl = parse_duration(ttl) if ttl is not None else None
    except ValueError:
        raise ConfigError(f"--ttl {ttl!r} is not valid: expected {parse_duration.__name__}") from None
    ttl_s = env_value("TTL", explicit_ttl, float(DEFAULT_TTL), parse_duration)
    raw_auth = env_value("BASIC_AUTH", basic_auth, "", str)
    return ServerConfig(
        broker_url=env_value("BROKER_URL", broker_url, "", str) or None,
        store_url=env_value("STORE", store, "", str) or default_store_url(),
        prefix=env_value("PREFIX", prefix, DEFAULT_PREFIX, str),
        ttl=ttl_s or None,
        max_tasks=env_value("MAX_TASKS", max_tasks, None, parse_positive_int),
        basic_auth=parse_credentials(raw_auth) if raw_auth else None,
        embedded_consumer=env_value("EMBEDDED_CONSUMER", embedded_consumer, True, parse_bool),
    )
