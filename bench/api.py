"""API latency at scale: p50/p95/p99 of the list, filter, graph, detail and stats (overview, heatmap)
endpoints over real HTTP.

Populates a store with `--tasks` tasks (default 1,000,000: realistic flows of 8 tasks from
bench/_common.py plus one flow of 1,000 nodes) through `store.apply()` in large batches, then serves it
with the real app (`create_app(store=..., embedded_consumer=False)`) under uvicorn in a subprocess and
times requests from this process with a keep-alive HTTP client. List endpoints are timed while walking
their pages with `next_cursor` (so deep pages count too). Also prints the server's RSS.

The store is kept between runs: pass the same `--db` (or `--store`) and population is skipped.

    python bench/api.py                                   # 1M tasks in /tmp/celery-flow-bench/api.db
    python bench/api.py --tasks 100000 --db /tmp/small.db
    python bench/api.py --store postgresql://postgres@127.0.0.1/bench_api
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx

from _common import HOSTS, NAMES, TASKS_PER_FLOW, batches, stream
from celery_flow.events import Event
from celery_flow.store import TaskFilter, open_store

GRAPH_ROOT = "bench-graph-1000"
GRAPH_NODES = 1000


def graph_events(t0: float) -> list[Event]:
    """One flow of GRAPH_NODES tasks: a root fanning out to a group whose members each finished."""
    out: list[Event] = []
    group = uuid.uuid4().hex
    for i in range(GRAPH_NODES):
        task_id = GRAPH_ROOT if i == 0 else f"{GRAPH_ROOT}-{i:04d}"
        parent = None if i == 0 else GRAPH_ROOT
        lineage: dict[str, Any] = {"root_id": GRAPH_ROOT, "parent_id": parent, "name": NAMES[i % len(NAMES)]}
        if i:
            lineage["group_id"] = group
        t = t0 + i * 0.001
        out += [
            Event(v=1, id=uuid.uuid4().hex, type="sent", ts=t, task_id=task_id, **lineage),
            Event(v=1, id=uuid.uuid4().hex, type="received", ts=t + 0.01, task_id=task_id, hostname=HOSTS[0]),
            Event(v=1, id=uuid.uuid4().hex, type="started", ts=t + 0.02, task_id=task_id, hostname=HOSTS[0]),
            Event(v=1, id=uuid.uuid4().hex, type="succeeded", ts=t + 0.05, task_id=task_id, runtime=0.03),
        ]
    return out


def populate(url: str, tasks: int, batch: int) -> None:
    store = open_store(url)
    try:
        have = store.stats().tasks
        if have >= tasks:
            print(f"store already holds {have:,} tasks: not populating")
            catch_up_index(store)
            return
        flows = (tasks - have - (0 if store.get_task(GRAPH_ROOT) else GRAPH_NODES)) // TASKS_PER_FLOW
        # Flows over the last ~day, as a busy deployment would have them.
        rate = max(flows / 86_400, 1.0)
        t0 = time.time() - flows / rate - 600
        chunk = 2000
        start = time.perf_counter()
        applied = 0
        if store.get_task(GRAPH_ROOT) is None:
            store.apply(graph_events(time.time() - 300))
        for n in range(0, flows, chunk):
            events = stream(min(chunk, flows - n), seed=n + 7, rate=rate, t0=t0 + n / rate)
            for part in batches(events, batch):
                store.apply(part)
            catch_up_index(store)
            applied += len(events)
            rate_now = applied / (time.perf_counter() - start)
            done = have + (n + chunk) * TASKS_PER_FLOW
            print(
                f"\r  {min(done, tasks):,} tasks, {applied:,} events, {rate_now:,.0f} events/s",
                end="",
                flush=True,
            )
        print()
    finally:
        store.close()


def catch_up_index(store: Any) -> None:
    """Run the search indexer until it has caught up, as the consumers do behind the fold (a store of a
    commit before the indexer indexes in apply)."""
    index = getattr(store, "index_search", None)
    while index is not None and index().lag:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import uvicorn; from celery_flow.server.app import create_app; "
        f"uvicorn.run(create_app(store={url!r}, embedded_consumer=False), host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def time_endpoint(client: httpx.Client, path: str, params: dict[str, Any], n: int, walk: bool) -> list[float]:
    """Latencies (ms) of n requests; list endpoints follow next_cursor, starting over when exhausted."""
    latencies: list[float] = []
    cursor: str | None = None
    for _ in range(n):
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        start = time.perf_counter()
        response = client.get(path, params=query)
        latencies.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} {query} -> {response.status_code}: {response.text[:200]}")
        if walk:
            cursor = response.json().get("next_cursor")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument(
        "--db", default="/tmp/celery-flow-bench/api.db", help="SQLite file (kept between runs)"
    )
    parser.add_argument("--store", default=None, help="store URL instead of --db (e.g. postgresql://...)")
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=100, help="requests per endpoint")
    args = parser.parse_args()

    url = args.store or f"sqlite:///{os.path.abspath(args.db)}"
    populate(url, args.tasks, args.batch)

    store = open_store(url)
    rng = random.Random(3)
    flows = [f for f in store.list_flows(TaskFilter(), 50, None).items if f.root_id != GRAPH_ROOT]
    some = rng.choice(store.flow_tasks(rng.choice(flows).root_id))
    clusters = store.failures(None, None, None)
    # A customer id of a real task, for the argument search (about 10 tasks per id at 1,000,000).
    detail = store.get_task(some.task_id)
    customer = detail.kwargs["customer_id"] if detail is not None else 4711
    stats = store.stats()
    store.close()
    print(f"store: {stats.tasks:,} tasks, {stats.events:,} events ({url})")
    print(f"failure clusters: {len(clusters)}, the largest of {clusters[0].count:,} failed tasks")

    port = free_port()
    server = start_server(url, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/api/health").status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            cases: list[tuple[str, str, dict[str, Any], bool]] = [
                ("tasks, newest first (walking pages)", "/api/tasks", {"limit": 50}, True),
                ("tasks state=FAILURE", "/api/tasks", {"state": "FAILURE", "limit": 50}, True),
                ("tasks name=", "/api/tasks", {"name": NAMES[1], "limit": 50}, True),
                ("tasks worker=", "/api/tasks", {"worker": HOSTS[3], "limit": 50}, True),
                ("tasks state+name", "/api/tasks", {"state": "FAILURE", "name": NAMES[4], "limit": 50}, True),
                ("tasks root_id=", "/api/tasks", {"root_id": some.root_id, "limit": 50}, False),
                ("tasks q=name substring", "/api/tasks", {"q": "parse", "limit": 50}, True),
                ("tasks q=id prefix", "/api/tasks", {"q": some.task_id[:6], "limit": 50}, False),
                ("tasks q=word in kwargs (10%)", "/api/tasks", {"q": "ada", "limit": 50}, True),
                ("tasks q=key:value (~10 tasks)", "/api/tasks", {"q": f"customer_id:{customer}", "limit": 50},
                 True),
                ("tasks q=key:value (10%)", "/api/tasks", {"q": "country:DE", "limit": 50}, True),
                ("tasks q=word + key:value (1%)", "/api/tasks", {"q": "ada country:DE", "limit": 50}, True),
                ("tasks q=word in errors (2%)", "/api/tasks", {"q": "ValueError", "limit": 50}, True),
                ("tasks q=key:value + state=FAILURE", "/api/tasks",
                 {"q": "country:DE", "state": "FAILURE", "limit": 50}, True),
                ("tasks since/until (1 h)", "/api/tasks",
                 {"since": (some.sent_at or 0) - 3600, "until": some.sent_at, "limit": 50}, True),
                ("failures, everything stored", "/api/failures", {}, False),
                ("failures, last hour", "/api/failures", {"since": time.time() - 3600}, False),
                ("failures name=", "/api/failures", {"name": NAMES[1]}, False),
                ("tasks fingerprint= (walking pages)", "/api/tasks",
                 {"fingerprint": clusters[0].fingerprint, "limit": 50}, True),
                ("flows, newest first (walking pages)", "/api/flows", {"limit": 50}, True),
                ("flows state=FAILURE", "/api/flows", {"state": "FAILURE", "limit": 50}, True),
                ("flows name=", "/api/flows", {"name": NAMES[0], "limit": 50}, True),
                ("flows worker=", "/api/flows", {"worker": HOSTS[5], "limit": 50}, True),
                ("flows q=", "/api/flows", {"q": "fetch", "limit": 50}, True),
                ("flows q=key:value (~10 tasks)", "/api/flows", {"q": f"customer_id:{customer}", "limit": 50},
                 True),
                ("flows q=word + key:value (1%)", "/api/flows", {"q": "ada country:DE", "limit": 50}, True),
                (f"flow graph, {GRAPH_NODES} nodes", f"/api/flows/{GRAPH_ROOT}", {}, False),
                ("flow graph, 8 nodes", f"/api/flows/{some.root_id}", {}, False),
                ("task detail", f"/api/tasks/{some.task_id}", {}, False),
                ("trace", f"/api/traces/{some.trace_id}", {}, False),
                ("registry", "/api/registry", {}, False),
                ("workers", "/api/workers", {}, False),
                ("overview, last 24 h", "/api/stats/overview", {}, False),
                ("overview, last hour", "/api/stats/overview", {"since": time.time() - 3600}, False),
                ("heatmap runtime, all names, 24 h", "/api/stats/heatmap", {}, False),
                ("heatmap runtime, one name, 24 h", "/api/stats/heatmap", {"name": NAMES[1]}, False),
                ("heatmap queue_wait, 24 h", "/api/stats/heatmap", {"metric": "queue_wait"}, False),
                ("name trend, 24 h", f"/api/stats/names/{NAMES[1]}", {}, False),
            ]  # fmt: skip
            print(f"\n{'endpoint':<40} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
            for label, path, params, walk in cases:
                time_endpoint(client, path, params, 3, walk)  # warm-up
                lat = time_endpoint(client, path, params, args.requests, walk)
                print(
                    f"{label:<40} {statistics.median(lat):>8.1f} {percentile(lat, 0.95):>8.1f} "
                    f"{percentile(lat, 0.99):>8.1f}",
                    flush=True,
                )
        print(f"\nserver RSS after the run: {rss_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
