"""Overview and trends with a real worker: GET /api/stats/heatmap, /api/stats/overview, the backlog per
queue, /api/tasks?queue=, and the workers' pool, queues, running and failed counts.

Real worker, real broker, real HTTP, each test on a store of its own (SQLite, or a PostgreSQL schema of
its own). The windowing (regressions, buckets at exact times) is checked at the store level in
test_stats_store.py, with events at chosen timestamps.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.flow_env import Env, flow_env
from tests.support.postgres import own_store_url
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite-redis", "postgresql-amqp"])
def env(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Env]:
    store, transport = request.param.split("-")
    flow_url = redis_url if transport == "redis" else str(request.getfixturevalue("amqp_url"))
    urls = own_store_url(store, request, tmp_path)
    try:
        with flow_env(next(urls), flow_url, redis_url) as e:
            yield e
    finally:
        urls.close()


def get(env: Env, path: str, **params: Any) -> Any:
    resp = env.api.get(path, params=params)
    resp.raise_for_status()
    return resp.json()


def finished(env: Env, ids: list[str]) -> list[dict[str, Any]] | None:
    tasks = []
    for task_id in ids:
        resp = env.api.get(f"/api/tasks/{task_id}")
        if resp.status_code != 200 or resp.json()["state"] not in ("SUCCESS", "FAILURE"):
            return None
        tasks.append(resp.json())
    return tasks


def column(edges: list[float], seconds: float) -> int:
    """The heatmap column of a duration (the first also holds shorter ones, the last longer ones)."""
    inner = [j for j in range(len(edges) - 1) if edges[j] < seconds <= edges[j + 1]]
    return inner[0] if inner else (0 if seconds <= edges[0] else len(edges) - 2)


def test_heatmap_of_thirty_fast_and_ten_slow_runs(env: Env) -> None:
    since = time.time() - 60
    fast = [env.task("slow").delay(0.01).id for _ in range(30)]
    slow = [env.task("slow").delay(0.3).id for _ in range(10)]
    tasks = wait_for(lambda: finished(env, fast + slow), 60, "40 runs of t.slow")
    heat = get(env, "/api/stats/heatmap", name="t.slow", since=since)
    assert (heat["name"], heat["metric"]) == ("t.slow", "runtime")
    edges = heat["value_edges"]
    per_column = [sum(row[j] for row in heat["counts"]) for j in range(len(edges) - 1)]
    assert sum(per_column) == 40
    # Each run is in the column of its own runtime, and every fast run left of every slow one.
    want = [0] * (len(edges) - 1)
    for task in tasks:
        want[column(edges, task["runtime"])] += 1
    assert per_column == want
    runtimes = {t["task_id"]: t["runtime"] for t in tasks}
    assert max(column(edges, runtimes[i]) for i in fast) < min(column(edges, runtimes[i]) for i in slow)
    assert edges[min(column(edges, runtimes[i]) for i in slow)] < 0.3
    waits = get(env, "/api/stats/heatmap", name="t.slow", metric="queue_wait", since=since)
    assert sum(map(sum, waits["counts"])) == 40
    everything = get(env, "/api/stats/heatmap", since=since)
    assert sum(map(sum, everything["counts"])) == 40
    trend = get(env, "/api/stats/names/t.slow", since=since)
    assert (sum(trend["runs"]), sum(trend["failures"])) == (40, 0)
    assert trend["regression"] is None


def test_backlog_of_a_queue_nobody_consumes_drains_when_a_worker_starts(env: Env) -> None:
    queue = f"backlog_{uuid.uuid4().hex[:8]}"
    ids = [env.task("noop").apply_async(queue=queue).id for _ in range(50)]

    def backlog() -> int | None:
        waiting = {b["queue"]: b["waiting"] for b in get(env, "/api/stats/overview")["backlog"]}
        return int(waiting.get(queue, 0))

    wait_for(lambda: backlog() == 50, 30, "a backlog of 50")
    page = get(env, "/api/tasks", queue=queue, state="PENDING", limit=100)
    assert sorted(t["task_id"] for t in page["items"]) == sorted(ids)
    # The running worker starts consuming the queue (Celery's remote control `add_consumer`).
    replies = env.app.control.add_consumer(queue, reply=True, timeout=10)
    assert replies, "the worker did not answer add_consumer"
    wait_for(lambda: backlog() == 0, 60, "the backlog to drain")
    assert get(env, "/api/tasks", queue=queue, state="PENDING")["items"] == []
    assert all(b["queue"] != queue for b in get(env, "/api/stats/overview")["backlog"])


def test_overview_figures_and_the_tasks_behind_them(env: Env) -> None:
    since = time.time() - 60
    ok = [env.task("add").delay(1, i).id for i in range(5)]
    ko = [env.task("fail").delay(f"boom {i}").id for i in range(3)]
    wait_for(lambda: finished(env, ok + ko), 60, "8 tasks to finish")
    o = get(env, "/api/stats/overview", since=since)
    assert sum(o["throughput"]["SUCCESS"]) == 5
    assert sum(o["throughput"]["FAILURE"]) == 3
    assert len(o["throughput"]["SUCCESS"]) == len(o["time_edges"]) - 1
    assert (o["finished"], o["failed"], o["failure_rate"]) == (8, 3, 3 / 8)
    assert (o["lost"], o["stuck"], o["workers_online"], o["workers_offline"]) == (0, 0, 1, 0)
    # Each figure's tasks, through the list filters it links to.
    failed = get(env, "/api/tasks", state="FAILURE", since=since)["items"]
    assert sorted(t["task_id"] for t in failed) == sorted(ko)
    [cluster] = o["top_failures"]
    assert cluster["count"] == 3
    clustered = get(env, "/api/tasks", fingerprint=cluster["fingerprint"])["items"]
    assert sorted(t["task_id"] for t in clustered) == sorted(ko)
    assert get(env, "/api/tasks", stuck="true")["items"] == []
    slowest = {s["name"]: s for s in o["slowest"]}
    assert set(slowest) == {"t.add", "t.fail"}
    assert slowest["t.add"]["runs"] == 5
    named = get(env, "/api/tasks", name="t.add", since=since)["items"]
    assert len(named) == 5
    assert o["regressions"] == []


def test_workers_say_pool_concurrency_queues_running_and_failed(env: Env) -> None:
    ids = [env.task("fail").delay().id, env.task("add").delay(1, 2).id]
    wait_for(lambda: finished(env, ids), 60, "2 tasks to finish")
    [worker] = get(env, "/api/workers")
    assert (worker["pool"], worker["concurrency"], worker["status"]) == ("solo", 1, "online")
    assert worker["queues"] == [env.app.conf.task_default_queue]
    assert (worker["running"], worker["failed"], worker["tasks_run"]) == (0, 1, 2)
    assert worker["offline_at"] is None


@pytest.mark.parametrize("env", ["sqlite-redis"], indirect=True)
def test_a_name_made_three_times_slower_in_the_next_window_is_a_regression(env: Env) -> None:
    # Two one-minute buckets: 20 runs of ~10 ms in this one (the next, when this one ends in under 15 s),
    # 20 of ~30 ms in the one after.
    first = int(time.time() + 15) // 60 * 60
    for start, seconds in ((first, 0.01), (first + 60, 0.03)):
        wait_for(lambda at=start: time.time() >= at + 0.5 or None, 75, f"the minute starting at {start}")
        ids = [env.task("slow").delay(seconds).id for _ in range(20)]
        tasks = wait_for(lambda ids=ids: finished(env, ids), 30, f"20 runs of t.slow({seconds})")
        assert max(t["finished_at"] for t in tasks) < start + 60  # all in their own bucket
    trend = get(env, "/api/stats/names/t.slow", since=first, until=first + 120)
    regression = trend["regression"]
    assert regression is not None, trend
    assert (regression["runs_before"], regression["runs_after"]) == (20, 20)
    assert regression["p95_after"] >= 1.5 * regression["p95_before"]
    assert regression["p95_before"] < 0.03 <= regression["p95_after"] * 1.2
    overview = get(env, "/api/stats/overview", since=first, until=first + 120)
    assert [r["name"] for r in overview["regressions"]] == ["t.slow"]
