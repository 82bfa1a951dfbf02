"""worker.online (with the task registry), heartbeats and worker.offline from a real worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.events import EventLog
from tests.support.server_helpers import serving
from tests.support.wait import wait_for
from tests.support.worker import tracked_worker

import celery_flow
from celery_flow.server import create_app


def test_worker_online_heartbeat_offline_with_registry(
    redis_url: str, transport_url: str, unique_prefix: str
) -> None:
    log = EventLog(transport_url, unique_prefix)  # outlives the worker, to see it go offline
    with tracked_worker(redis_url, transport_url, unique_prefix, heartbeat_interval=0.2) as t:
        events = t.log.wait_for(lambda ev: any(e.type == "worker.heartbeat" for e in ev))
        online = next(e for e in events if e.type == "worker.online")
        assert online.hostname
        assert online.hostname.startswith("gen")
        assert "@" in online.hostname
        assert online.tasks is not None
        registry = {info.name: info for info in online.tasks}
        assert "t.add" in registry
        assert "t.flaky" in registry
        assert not any(name.startswith("celery.") for name in registry)
        assert registry["t.add"].signature == "(x: int, y: int) -> int"
        assert registry["t.add"].doc == "Add two numbers."
        assert registry["t.flaky"].signature == "(succeed_on: int = 2, countdown: float = 0.1) -> int"
        assert registry["t.noop"].doc is None
        heartbeat = next(e for e in events if e.type == "worker.heartbeat")
        assert heartbeat.hostname == online.hostname
        assert online.info
        assert online.info.get("pool") == "solo"
    events = log.wait_for(lambda ev: any(e.type == "worker.offline" for e in ev))
    log.close()
    offline = next(e for e in events if e.type == "worker.offline")
    assert offline.hostname == online.hostname
    assert offline.ts >= heartbeat.ts


def test_a_workers_own_heartbeat_interval_reaches_api_workers(redis_url: str, tmp_path: Path) -> None:
    # Not the default (15 s): the server must learn it from the worker, not assume it.
    with tracked_worker(redis_url, redis_url, heartbeat_interval=42.5) as t:
        app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=t.prefix)
        with serving(app) as base:

            def worker() -> dict[str, Any] | None:
                workers = httpx.get(base + "/api/workers", timeout=5).json()
                return next((w for w in workers if w["status"] == "online"), None)

            seen = wait_for(worker, 20, "the worker online in /api/workers")
    assert seen["heartbeat_interval"] == 42.5
    assert seen["info"]["pool"] == "solo"


def test_init_is_idempotent_and_shutdown_stops_publishing(redis_url: str) -> None:
    with tracked_worker(redis_url, redis_url, worker=False) as t:
        first = celery_flow.init(t.app, transport_url=redis_url, prefix=t.prefix)
        second = celery_flow.init(t.app, transport_url=redis_url, prefix=t.prefix)
        assert first is second
        # a no-worker producer: sent events only, one per publish even with init() called three times
        t.app.tasks["t.add"].delay(1, 1)
        events = t.log.wait_for(lambda ev: any(e.type == "sent" for e in ev))
        celery_flow.shutdown(t.app)
        t.app.tasks["t.add"].delay(2, 2)
        t.log.poll(0.5)
        assert [e.type for e in events] == ["sent"]
        assert [e.args for e in t.log.events] == [[1, 1]]


def test_init_rejects_an_unusable_url(redis_url: str) -> None:
    from celery import Celery

    from celery_flow.transport import ConfigError

    app = Celery("x", broker="filesystem://")  # a kombu broker celery-flow cannot publish to
    with pytest.raises(ConfigError, match="CELERY_FLOW_BROKER_URL"):
        celery_flow.init(app)


def test_env_vars_configure_init(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery

    monkeypatch.setenv("CELERY_FLOW_BROKER_URL", redis_url)
    monkeypatch.setenv("CELERY_FLOW_PREFIX", "from_env")
    monkeypatch.setenv("CELERY_FLOW_TTL", "60")
    app = Celery("x", broker="memory://")
    tracker = celery_flow.init(app)
    try:
        assert tracker.settings.transport_url == redis_url
        assert tracker.settings.prefix == "from_env"
        assert tracker.settings.ttl == 60
    finally:
        celery_flow.shutdown(app)
