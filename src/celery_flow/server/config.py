"""`ServerConfig`: every setting of a celery-flow server process, resolved once.

`resolve()` is where the CLI and `create_app_from_env()` build it: explicit argument, then CELERY_FLOW_*
environment variable, then default (settings.env_value); every bad value raises ConfigError with one line
naming the fix. `embedded()` builds it for `CeleryFlowExtension`'s keyword arguments. The object is then
passed down (app factory, extension, runtime, consumer, store), and nothing below reads the environment.

`--reload` serves from a fresh process that re-imports the app: the resolved config crosses over as JSON
in one variable, CELERY_FLOW_SERVER_CONFIG (`to_env()` / `from_env()`), not re-resolved from many.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from celery_flow.errors import ConfigError
from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.settings import (
    DEFAULT_PREFIX,
    DEFAULT_SCHEDULE_GRACE,
    DEFAULT_TTL,
    ENV_PREFIX,
    env_value,
    parse_bool,
    parse_duration,
    parse_positive_int,
    parse_seconds,
)

CONFIG_ENV = ENV_PREFIX + "SERVER_CONFIG"
# Task names /metrics labels by default; the rest are counted as name="other" (server/metrics.py).
DEFAULT_METRICS_MAX_NAMES = 100


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
    """What a server, `consume` or the demo runs with. Option and variable names: `resolve()`."""

    broker_url: str | None
    store_url: str
    prefix: str
    # Retention: seconds a task is kept, and tasks kept at most (None: no bound).
    ttl: float | None
    max_tasks: int | None
    basic_auth: tuple[str, str] | None
    embedded_consumer: bool
    # Assumed for a worker that does not announce its own heartbeat interval.
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    # The OTLP/HTTP traces URL finished tasks are exported to (None: no export).
    otlp_endpoint: str | None = None
    # Seconds of running after which any task is stuck, whatever its name's history (None: history only).
    stuck_after: float | None = None
    # Seconds a beat schedule entry's next run may be overdue before it is late (store/schedules.py).
    schedule_grace: float = DEFAULT_SCHEDULE_GRACE
    # Task names with labels of their own in /metrics; the rest are counted as name="other".
    metrics_max_names: int = DEFAULT_METRICS_MAX_NAMES

    def to_env(self) -> dict[str, str]:
        """This config as the environment of a process that reads it back with `from_env()`."""
        return {CONFIG_ENV: msgspec.json.encode(self).decode()}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """The config `to_env()` handed over, else `resolve()` from CELERY_FLOW_* variables."""
        env = os.environ if environ is None else environ
        raw = env.get(CONFIG_ENV)
        if not raw:
            return resolve(environ=env)
        try:
            return msgspec.json.decode(raw, type=cls)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{CONFIG_ENV} is not a celery-flow server config ({exc}): unset it") from None


def resolve(
    broker_url: str | None = None,
    store: str | None = None,
    prefix: str | None = None,
    ttl: str | None = None,
    max_tasks: int | None = None,
    basic_auth: str | None = None,
    embedded_consumer: bool | None = None,
    otlp_endpoint: str | None = None,
    default_broker_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    stuck_after: str | None = None,
    metrics_max_names: int | None = None,
    schedule_grace: str | None = None,
) -> ServerConfig:
    """Arguments first (the CLI's options), then CELERY_FLOW_* variables, then defaults. Raises ConfigError.

    --broker-url / CELERY_FLOW_BROKER_URL (else `default_broker_url`: the Celery app's, under `celery -A
    proj flow`), --store / CELERY_FLOW_STORE (default: a SQLite file in the user data directory),
    --prefix / CELERY_FLOW_PREFIX, --ttl / CELERY_FLOW_TTL (default 1 day, 0 keeps everything),
    --max-tasks / CELERY_FLOW_MAX_TASKS, --basic-auth / CELERY_FLOW_BASIC_AUTH, --no-consumer /
    CELERY_FLOW_EMBEDDED_CONSUMER, CELERY_FLOW_HEARTBEAT_INTERVAL, --stuck-after /
    CELERY_FLOW_STUCK_AFTER (a duration; 0 or unset: off), --schedule-grace / CELERY_FLOW_SCHEDULE_GRACE
    (a duration, default 60 s), --metrics-max-names /
    CELERY_FLOW_METRICS_MAX_NAMES (default 100), and --otlp-endpoint / OTEL_EXPORTER_OTLP_*
    (export.otlp_export_endpoint).
    """
    from celery_flow.export import otlp_export_endpoint

    env = os.environ if environ is None else environ
    try:
        explicit_ttl = parse_duration(ttl) if ttl is not None else None
    except ValueError:
        raise ConfigError(f"--ttl {ttl!r} is not valid: expected {parse_duration.__name__}") from None
    ttl_s = env_value("TTL", explicit_ttl, float(DEFAULT_TTL), parse_duration, env)
    try:
        explicit_stuck = parse_duration(stuck_after) if stuck_after is not None else None
    except ValueError:
        raise ConfigError(
            f"--stuck-after {stuck_after!r} is not valid: expected {parse_duration.__name__}"
        ) from None
    try:
        explicit_grace = parse_duration(schedule_grace) if schedule_grace is not None else None
    except ValueError:
        raise ConfigError(
            f"--schedule-grace {schedule_grace!r} is not valid: expected {parse_duration.__name__}"
        ) from None
    raw_auth = env_value("BASIC_AUTH", basic_auth, "", str, env)
    return ServerConfig(
        **_shared(
            broker_url,
            store,
            prefix,
            default_broker_url,
            env,
            explicit_stuck,
            metrics_max_names,
            explicit_grace,
        ),
        ttl=ttl_s or None,
        max_tasks=env_value("MAX_TASKS", max_tasks, None, parse_positive_int, env),
        basic_auth=parse_credentials(raw_auth) if raw_auth else None,
        embedded_consumer=env_value("EMBEDDED_CONSUMER", embedded_consumer, True, parse_bool, env),
        otlp_endpoint=otlp_export_endpoint(otlp_endpoint, env),
    )


def embedded(
    broker_url: str | None,
    store_url: str | None,
    prefix: str | None,
    ttl: float | None,
    max_tasks: int | None,
    embedded_consumer: bool,
    basic_auth: tuple[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """`create_app()`'s and `CeleryFlowExtension`'s keyword arguments as a config. The broker, store and
    prefix left out come from CELERY_FLOW_* as in `resolve()`; retention is only what is passed (None
    keeps everything), so an app embedding the server keeps its data unless it says otherwise; no export
    (they take `sinks` instead)."""
    env = os.environ if environ is None else environ
    return ServerConfig(
        **_shared(broker_url, store_url, prefix, None, env),
        ttl=ttl or None,
        max_tasks=max_tasks,
        basic_auth=basic_auth,
        embedded_consumer=embedded_consumer,
    )


def _shared(
    broker_url: str | None,
    store_url: str | None,
    prefix: str | None,
    default_broker_url: str | None,
    env: Mapping[str, str],
    stuck_after: float | None = None,
    metrics_max_names: int | None = None,
    schedule_grace: float | None = None,
) -> dict[str, Any]:
    """The settings `resolve()` and `embedded()` resolve alike: where events come from and go."""
    from celery_flow.store import default_store_url

    return {
        "broker_url": env_value("BROKER_URL", broker_url, "", str, env) or default_broker_url or None,
        "store_url": env_value("STORE", store_url, "", str, env) or default_store_url(),
        "prefix": env_value("PREFIX", prefix, DEFAULT_PREFIX, str, env),
        "heartbeat_interval": env_value(
            "HEARTBEAT_INTERVAL", None, DEFAULT_HEARTBEAT_INTERVAL, parse_seconds, env
        ),
        "stuck_after": env_value("STUCK_AFTER", stuck_after, 0.0, parse_duration, env) or None,
        "schedule_grace": env_value(
            "SCHEDULE_GRACE", schedule_grace, DEFAULT_SCHEDULE_GRACE, parse_duration, env
        ),
        "metrics_max_names": env_value(
            "METRICS_MAX_NAMES", metrics_max_names, DEFAULT_METRICS_MAX_NAMES, parse_positive_int, env
        ),
    }
