"""Periodic tasks with a real `celery beat` subprocess (its own schedule file) and a real worker: the
entries and their runs, late and missed runs while beat is stopped, beat down, and back again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from mcp import Client
from tests.support.beat_app import ENTRIES, make_beat_app
from tests.support.mcp_client import run_session, tool_text
from tests.support.private_process import terminate
from tests.support.server_helpers import REPO, serving
from tests.support.wait import wait_for

import celery_flow
from celery_flow.server import create_app

pytestmark = pytest.mark.slow

EVERY = 2.0
GRACE = 1.0
TICK = "tick every 2s"
BOOM = "boom every 2s"


@contextmanager
def beat(env: dict[str, str], schedule_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A tests.support.beat_app beat` with its own schedule file; SIGTERM (beat's own clean
    shutdown) on the way out, SIGKILL if it still runs 20 s later."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.support.beat_app", "beat", "-s", str(schedule_file),
         "--loglevel", "WARNING"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        terminate(proc)


def entry(api: httpx.Client, name: str) -> dict[str, Any]:
    body = api.get("/api/schedules").raise_for_status().json()
    found: dict[str, Any] = {i["name"]: i for i in body["items"]}[name]  # KeyError: not yet
    return {**found, "beat_down": body["beat_down"]}


def test_beat_entries_runs_late_missed_and_beat_down(
    redis_url: str, unique_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    queue = f"q_{unique_prefix}"
    monkeypatch.setenv("CELERY_FLOW_SCHEDULE_GRACE", str(GRACE))
    server = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'flow.db'}", prefix=unique_prefix)
    worker_app = make_beat_app(redis_url, redis_url, unique_prefix, queue, EVERY)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CFT_BROKER_URL": redis_url,
        "CFT_FLOW_URL": redis_url,
        "CFT_FLOW_PREFIX": unique_prefix,
        "CFT_QUEUE": queue,
        "CFT_EVERY": str(EVERY),
        "CELERY_FLOW_HEARTBEAT_INTERVAL": "1",
    }
    schedule_file = tmp_path / "celerybeat-schedule"
    try:
        with (
            serving(server) as url,
            httpx.Client(base_url=url, timeout=10) as api,
            start_worker(worker_app, pool="solo", perform_ping_check=False, loglevel="ERROR"),
        ):
            with beat(env, schedule_file) as proc:
                # The entries, as beat announced them, and their runs as the worker ran them.
                tick = wait_for(
                    lambda: entry(api, TICK),
                    40,
                    "two successful runs of the 2 s entry",
                    until=lambda e: sum(r["state"] == "SUCCESS" for r in e["recent"]) >= 2,
                )
                assert tick["task"] == ENTRIES[TICK]
                assert tick["schedule"] == "every 2s"
                assert tick["every"] == EVERY
                assert tick["beat_up"] is True
                assert tick["beat_down"] is False
                assert tick["late"] is False
                # Missed while beat is up only if beat itself sent a run an interval late (a starved
                # machine): then beat reported it, and the server adds nothing of its own.
                assert tick["missed"] == sum(r["missed_before"] for r in tick["recent"]), tick
                assert tick["expected_next_at"] > tick["last_sent_at"]
                boom = wait_for(
                    lambda: entry(api, BOOM), 20, "a failed run", until=lambda e: e["failures"] >= 1
                )
                assert any(r["state"] == "FAILURE" for r in boom["recent"])
                runs = api.get("/api/tasks", params={"name": ENTRIES[TICK]}).json()["items"]
                assert {r["task_id"] for r in tick["recent"]} <= {r["task_id"] for r in runs}
                # Beat stops (SIGTERM: it says offline): beat is down at once, and each entry goes late
                # once its next run is overdue by the grace period, then counts the runs it misses.
                terminate(proc)
                stopped = time.monotonic()
                down = wait_for(lambda: entry(api, TICK), 10, "beat down", until=lambda e: e["beat_down"])
                assert down["beat_up"] is False
                late = wait_for(
                    lambda: entry(api, TICK), 20, "late with 2 missed runs",
                    until=lambda e: e["late"] and e["missed"] >= 2,
                )  # fmt: skip
                assert late["beat_down"] is True
                assert late["overdue"] > GRACE
                overview = api.get("/api/stats/overview").json()
                assert overview["beat_down"] is True
                assert overview["schedules_late"] == 2
                assert overview["schedules_missed"] >= late["missed"]
                # An assistant asking over MCP hears the same: the entry late, beat the cause.
                said = run_session(lambda c: tool_text(c, "list_schedules", {}), Client(f"{url}/mcp"))
                assert f"- {TICK}: task {ENTRIES[TICK]} every 2s | LATE by" in said, said
                assert "BEAT IS DOWN" in said, said
                down_for = time.monotonic() - stopped
            # Beat again, on the same schedule file: the overdue run goes out at once, late clears.
            with beat(env, schedule_file):
                back = wait_for(
                    lambda: entry(api, TICK), 30, "not late any more",
                    until=lambda e: not e["late"] and not e["beat_down"],
                )  # fmt: skip
                assert back["missed"] >= 2, "runs missed while beat was down stay counted"
                assert back["recent"][0]["late"] is True, "the overdue run went out late"
    finally:
        celery_flow.shutdown(worker_app)
    print(f"\nschedules test: beat down for {down_for:.1f} s, whole test {time.monotonic() - started:.1f} s")
