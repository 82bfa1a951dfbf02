"""`celery-flow server` restarted (a deploy) while workers keep publishing: the UI's data is complete after.

Workers do not know the server exists: the library's publisher keeps writing to the stream while the
server is down, and the restarted server's embedded consumer must fold everything written before, during
and after the restart. Checked through the HTTP API the UI reads: every task listed once, in its final
state, with all its events; health `ok` again.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from celery_flow.tracking.publisher import Publisher
from tests.support.events import event
from tests.support.server_helpers import cli_process, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(150)

TASKS = 1500
RATE = 500.0  # tasks/s: a 3 s burst, the restart lands in its middle


def _emit(publisher: Publisher, task_ids: list[str], started: threading.Event, done: threading.Event) -> None:
    start = time.perf_counter()
    for i, task_id in enumerate(task_ids):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        if i == len(task_ids) // 5:
            started.set()
        now = time.time()
        common: dict[str, Any] = {"name": "app.burst", "root_id": task_id, "retries": 0}
        for offset, type_, extra in (
            (-0.003, "sent", {"args": [i], "queue": "celery"}),
            (-0.002, "received", {"hostname": "celery@w1"}),
            (-0.001, "started", {"hostname": "celery@w1", "pid": 11}),
            (0.0, "succeeded", {"hostname": "celery@w1", "pid": 11, "runtime": 0.001, "result": i}),
        ):
            publisher.put(event(type_, task_id, now + offset, **common, **extra))
    done.set()


def _all_tasks(client: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, "name": "app.burst"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/tasks", params=params)
        page.raise_for_status()
        body = page.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if not cursor:
            return items


@pytest.fixture
def publisher(redis_url: str, unique_prefix: str) -> Iterator[Publisher]:
    pub = Publisher(redis_url, unique_prefix, buffer_size=100_000)
    yield pub
    pub.stop(2.0)


def test_server_restarted_during_a_burst_serves_complete_data(
    redis_url: str, unique_prefix: str, tmp_path: Path, publisher: Publisher, redis_client: Any
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["server", "--broker-url", redis_url, "--store", f"sqlite:///{tmp_path}/flow.db", "--prefix",
            unique_prefix, "--port", str(port), "--ttl", "0", "--log-level", "warning"]  # fmt: skip
    task_ids = [uuid.uuid4().hex for _ in range(TASKS)]
    started, done = threading.Event(), threading.Event()
    emitter = threading.Thread(target=_emit, args=(publisher, task_ids, started, done), daemon=True)
    client = httpx.Client(base_url=url, timeout=10)
    try:
        with cli_process(*args, log=tmp_path / "server1.log") as first:
            wait_for(lambda: client.get("/api/health").status_code == 200, 30, "the server to start")
            emitter.start()
            assert started.wait(30)
            # The consumer has been folding part of the burst; now a deploy stops the server mid-burst.
            wait_for(lambda: client.get("/api/tasks", params={"limit": 1}).json()["items"], 30, "first tasks")
            first.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal: -SIGTERM is a clean exit.
            assert first.wait(30) in (0, -signal.SIGTERM), (tmp_path / "server1.log").read_text()
        assert not done.is_set(), "the burst ended before the restart: it proves nothing (slow machine?)"
        # Down for a moment while the workers keep publishing.
        with cli_process(*args, log=tmp_path / "server2.log") as second:
            wait_for(lambda: client.get("/api/health").status_code == 200, 30, "the server to restart")
            assert done.wait(60), "the burst never finished"
            assert publisher.flush(10), "the publisher could not hand every event to Redis"
            assert publisher.dropped_total == 0

            items = wait_for(lambda: (t := _all_tasks(client)) and len(t) >= TASKS and
                             all(i["state"] == "SUCCESS" for i in t) and t, 60,
                             "every task of the burst to be listed as SUCCESS")  # fmt: skip
            assert sorted(i["task_id"] for i in items) == sorted(task_ids)  # each exactly once
            for task_id in task_ids[:: TASKS // 20]:
                detail = client.get(f"/api/tasks/{task_id}").json()
                assert [e["type"] for e in detail["events"]] == ["sent", "received", "started", "succeeded"]
            # Health is cached for a moment: poll until it reports every event stored.
            health = wait_for(lambda: (h := client.get("/api/health").json())["status"] == "ok"
                              and h["store"]["events"] >= TASKS * 4 and h, 30, "health ok")  # fmt: skip
            assert health["rejected_total"] == 0
            assert second.poll() is None
    finally:
        client.close()
        redis_client.delete(f"{unique_prefix}:events")
