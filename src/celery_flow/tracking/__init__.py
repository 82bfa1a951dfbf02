"""Tracking inside the user's Celery processes: `init(app)` hooks signals and a worker bootstep,
`shutdown(app)` removes them. Every option: docs/tracking.md."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from celery_flow.errors import ConfigError
from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.settings import (
    DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_PREFIX,
    DEFAULT_TTL,
    TrackingSettings,
    env_value,
    parse_bool,
    parse_duration,
    parse_keys,
    parse_positive_int,
    parse_seconds,
)
from celery_flow.tracking.hooks import Tracker, _last, connect_signals, disconnect_signals, trackers
from celery_flow.tracking.trace import current_trace_id, reset_trace_id, set_trace_id, trace
from celery_flow.tracking.tracer import trace_through
from celery_flow.transport import from_url
from celery_flow.transport.urls import kind_of, redact_url, with_sqs_options

__all__ = [
    "Tracker",
    "current_trace_id",
    "init",
    "reset_trace_id",
    "set_trace_id",
    "shutdown",
    "trace",
]

logger = logging.getLogger("celery_flow.tracking")


def init(
    app: Any,
    transport_url: str | None = None,
    prefix: str | None = None,
    ttl: int | None = None,
    capture_args: bool | None = None,
    capture_result: bool | None = None,
    scrub_sensitive_data: bool | None = None,
    additional_sensitive_keys: Iterable[str] | None = None,
    safe_keys: Iterable[str] | None = None,
    max_value_size: int | None = None,
    buffer_size: int | None = None,
    heartbeat_interval: float | None = None,
) -> Tracker:
    """Start tracking `app` in this process (producer and, when it runs one, worker).

    Unset options fall back to CELERY_FLOW_* environment variables, then to defaults; with no
    `transport_url` and no CELERY_FLOW_BROKER_URL, events go to the app's own broker. Calling it again for
    the same app with the same options changes nothing; with different options it replaces them.
    Raises ConfigError only for an unusable configuration (never later, never inside tasks), and then
    leaves any earlier tracking of `app` as it was.
    """
    settings = TrackingSettings(
        transport_url=_broker_url(app, transport_url),
        prefix=env_value("PREFIX", prefix, DEFAULT_PREFIX, str),
        ttl=int(env_value("TTL", None if ttl is None else float(ttl), float(DEFAULT_TTL), parse_duration)),
        capture_args=env_value("CAPTURE_ARGS", capture_args, True, parse_bool),
        capture_result=env_value("CAPTURE_RESULT", capture_result, True, parse_bool),
        scrub_sensitive_data=env_value("SCRUB_SENSITIVE_DATA", scrub_sensitive_data, True, parse_bool),
        additional_sensitive_keys=frozenset(
            env_value("ADDITIONAL_SENSITIVE_KEYS", _keys(additional_sensitive_keys), frozenset(), parse_keys)
        ),
        safe_keys=frozenset(env_value("SAFE_KEYS", _keys(safe_keys), frozenset(), parse_keys)),
        max_value_size=env_value(
            "MAX_VALUE_SIZE", max_value_size, DEFAULT_MAX_VALUE_SIZE, parse_positive_int
        ),
        buffer_size=env_value("BUFFER_SIZE", buffer_size, 10_000, parse_positive_int),
        heartbeat_interval=env_value(
            "HEARTBEAT_INTERVAL", heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL, parse_seconds
        ),
    )
    return _start(app, settings)


def _start(app: Any, settings: TrackingSettings) -> Tracker:
    """Track `app` with `settings`, replacing an earlier tracker with other settings (see `init`)."""
    existing = trackers.get(id(app))
    if existing is not None and existing.settings == settings:
        return existing
    # Validate the URL (scheme and options) now, where a mistake is visible, not in the background thread,
    # and before an earlier tracker is replaced: a bad new URL leaves the tracking that works alone.
    from_url(settings.transport_url, prefix=settings.prefix).close()
    tracker = Tracker(app, settings)
    if existing is not None:
        shutdown(app)
        # The same process with new options: what its worker bootstep told the earlier tracker still holds.
        tracker.nodename = existing.nodename
        tracker.publisher.hostname = existing.publisher.hostname
        tracker.runs_tasks_here = existing.runs_tasks_here
    trackers[id(app)] = tracker
    _last.append(tracker)
    connect_signals()
    _connect_process_signals()
    from celery_flow.tracking.worker import FlowWorkerStep

    app.steps["consumer"].add(FlowWorkerStep)
    from celery_flow.tracking.beat import connect_beat

    connect_beat()
    logger.debug("celery-flow: tracking %s, events to %s", app.main, redact_url(settings.transport_url))
    return tracker


def _broker_url(app: Any, transport_url: str | None) -> str:
    """`transport_url`, else CELERY_FLOW_BROKER_URL, else the app's broker; ConfigError if none is usable."""
    url = env_value("BROKER_URL", transport_url, "", str)
    if not url:
        url = str(app.conf.broker_url or "")
        if kind_of(url) == "sqs":
            # The app's region and is_secure (kombu's transport options) hold for celery-flow's queue
            # too; an explicit URL is taken as written, as the server takes it.
            url = with_sqs_options(url, app.conf.broker_transport_options or {})
    if not url:
        raise ConfigError(
            "celery-flow has no broker URL: pass init(app, transport_url=...) or set CELERY_FLOW_BROKER_URL"
        )
    if kind_of(url) is None:
        raise ConfigError(
            f"celery-flow cannot publish to {redact_url(url)!r}: pass init(app, transport_url='redis://...') "
            "or set CELERY_FLOW_BROKER_URL to a Redis, RabbitMQ or SQS URL"
        )
    return url


def _keys(keys: Iterable[str] | None) -> frozenset[str] | None:
    if keys is None:
        return None
    keys = frozenset(keys)
    return keys or None


def shutdown(app: Any = None, timeout: float = 2.0) -> None:
    """Stop tracking `app` (every app when None): disconnect, flush for at most `timeout` s, stop."""
    targets = list(trackers.values()) if app is None else [t for t in trackers.values() if t.app is app]
    for tracker in targets:
        trackers.pop(id(tracker.app), None)
        while tracker in _last:
            _last.remove(tracker)
        from celery_flow.tracking.worker import FlowWorkerStep

        with contextlib.suppress(Exception):
            tracker.app.steps["consumer"].discard(FlowWorkerStep)
        tracker.publisher.stop(timeout)
    if not trackers:
        disconnect_signals()


_process_signals_connected = False


def _connect_process_signals() -> None:
    """Flush a prefork child's buffer when the pool retires it (max_tasks_per_child, shutdown)."""
    global _process_signals_connected
    if _process_signals_connected:
        return
    from celery import signals

    signals.worker_process_shutdown.connect(_flush_child, weak=False, dispatch_uid="celery_flow.child_flush")
    signals.worker_process_init.connect(_child_started, weak=False, dispatch_uid="celery_flow.child_init")
    _process_signals_connected = True


def _child_started(sender: Any = None, **_: Any) -> None:
    """A prefork child learns the worker's nodename (celery@host) for its events, and runs its tasks
    through wrapped tracers (it has just built its own)."""
    for tracker in list(trackers.values()):
        if isinstance(sender, str) and sender:
            tracker.nodename = sender
            tracker.publisher.hostname = sender
        with contextlib.suppress(Exception):  # never break the child's start: the signals still report
            trace_through(tracker.app)


def _flush_child(**_: Any) -> None:
    for tracker in list(trackers.values()):
        with contextlib.suppress(Exception):
            tracker.publisher.flush(1.0)
