"""Configuration from explicit arguments first, then CELERY_FLOW_* environment variables, then defaults.

One resolver for every setting, so the library, the server and the CLI agree on precedence and on the
error message for a bad value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from celery_flow.errors import ConfigError
from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL

ENV_PREFIX = "CELERY_FLOW_"
DEFAULT_PREFIX = "celery_flow"
#: The consumer group the server reads with; every group gets every event.
DEFAULT_GROUP = "celery_flow"
DEFAULT_TTL = 86_400
# Seconds a beat schedule entry's next run may be overdue before it is late (--schedule-grace).
DEFAULT_SCHEDULE_GRACE = 60.0
DEFAULT_MAX_VALUE_SIZE = 4096

T = TypeVar("T")


def env_value(
    name: str,
    explicit: T | None,
    default: T,
    parse: Callable[[str], T],
    environ: Mapping[str, str] | None = None,
) -> T:
    """`explicit` if given, else CELERY_FLOW_<NAME> parsed with `parse`, else `default`."""
    if explicit is not None:
        return explicit
    env = os.environ if environ is None else environ
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except ValueError:
        raise ConfigError(
            f"{ENV_PREFIX}{name}={raw!r} is not valid: expected {getattr(parse, '__name__', 'a value')}"
        ) from None


def parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


parse_bool.__name__ = "a boolean (1/0, true/false, yes/no, on/off)"


def parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


parse_positive_int.__name__ = "a positive integer"


def parse_seconds(raw: str) -> float:
    value = float(raw)
    if value <= 0 or not math.isfinite(value):
        raise ValueError(raw)
    return value


parse_seconds.__name__ = "a positive number of seconds"


def parse_duration(raw: str) -> float:
    """Seconds from `3600`, `90s`, `30m`, `24h`, `7d` or `2w`; `0` disables age-based retention."""
    text = raw.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    factor = 1
    if text and text[-1] in units:
        factor = units[text[-1]]
        text = text[:-1]
    value = float(text) * factor
    if value < 0 or not math.isfinite(value):
        raise ValueError(raw)
    return value


parse_duration.__name__ = "a duration such as 3600, 30m, 24h or 7d"


def parse_keys(raw: str) -> frozenset[str]:
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


parse_keys.__name__ = "a comma-separated list of keys"


@dataclass(frozen=True)
class TrackingSettings:
    """Everything `celery_flow.init()` needs, already resolved against the environment."""

    transport_url: str
    prefix: str = DEFAULT_PREFIX
    ttl: int = DEFAULT_TTL
    capture_args: bool = True
    capture_result: bool = True
    scrub_sensitive_data: bool = True
    additional_sensitive_keys: frozenset[str] = field(default_factory=frozenset)
    safe_keys: frozenset[str] = field(default_factory=frozenset)
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    # Publisher buffer: events kept while the broker is slow or down before the oldest are dropped.
    buffer_size: int = 10_000
    # Seconds between a worker's heartbeats; announced to the server, which judges the worker by it.
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
