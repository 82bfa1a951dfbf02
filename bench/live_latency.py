"""Live latency: from a task's `succeeded` event (task_postrun) to the WebSocket frame a UI receives.

The whole real path is exercised: the library's background `Publisher` (bounded buffer, batched
pipelined writes) -> Redis Streams -> the embedded consumer of a real `celery-flow server` subprocess
(uvicorn) -> SQLite store -> the live poller -> `/api/live` -> a WebSocket client in this process.

A synthetic producer plays the workers: every millisecond-ish tick it emits the four events of each
task due (`sent`, `received`, `started`, `succeeded`), the `succeeded` stamped with the wall clock at the
moment it is handed to the publisher, exactly what `task_postrun` does. The WS client notes the wall
clock when a frame shows the task in state SUCCESS; latency = receipt - succeeded ts (one host, one clock).

Baseline in the same run: the same measurement at a trickle (10 tasks/s), where the figure is dominated
by the live poll interval (250 ms) rather than by load. Usage:

    python bench/live_latency.py                    # 1,000 tasks/s for 10 s, then 10 tasks/s for 5 s
    python bench/live_latency.py --rate 1000 --seconds 3 --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The code under test: this checkout's, or another's (`CELERY_FLOW_BENCH_SRC=<checkout>/src`, to measure
# an older commit beside this one in the same run).
SRC = Path(os.environ.get("CELERY_FLOW_BENCH_SRC") or REPO / "src")
sys.path.insert(0, str(SRC))

from celery_flow.events import Event  # noqa: E402
from celery_flow.tracking.publisher import Publisher  # noqa: E402

BROKER = os.environ.get("CELERY_FLOW_BENCH_REDIS", "redis://127.0.0.1:6379/15")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class LiveClient:
    """A WebSocket client on /api/live that records when each task was first seen in SUCCESS."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        warnings.filterwarnings("ignore", category=DeprecationWarning, module="websockets")
        warnings.filterwarnings("ignore", message=".*context manager.*", category=DeprecationWarning)
        self.ws = connect(url, open_timeout=10, max_size=None)
        self.seen: dict[str, float] = {}
        self.frames = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                raw = self.ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except Exception:
                return
            now = time.time()
            frame = json.loads(raw)
            if frame.get("type") != "tasks":
                continue
            self.frames += 1
            for item in frame["items"]:
                if item.get("state") == "SUCCESS":
                    self.seen.setdefault(item["task_id"], now)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(Exception):
            self.ws.close()
        self.thread.join(5)


def _task_events(task_id: str, name: str, sent_at: float) -> list[Event]:
    common: dict[str, Any] = {"task_id": task_id, "name": name, "root_id": task_id, "retries": 0}
    return [
        Event(v=1, id=uuid.uuid4().hex, type="sent", ts=sent_at, queue="celery", args=[1, 2], **common),
        Event(v=1, id=uuid.uuid4().hex, type="received", ts=sent_at, hostname="celery@bench", **common),
        Event(v=1, id=uuid.uuid4().hex, type="started", ts=sent_at, hostname="celery@bench", pid=1, **common),
    ]


def run_load(publisher: Publisher, client: LiveClient, rate: float, seconds: float) -> dict[str, float]:
    """Emit `rate` tasks/s for `seconds`; return latency percentiles (ms) of the tasks that arrived."""
    finished: dict[str, float] = {}
    total = int(rate * seconds)
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        task_id = uuid.uuid4().hex
        now = time.time()
        for event in _task_events(task_id, "bench.live", now - 0.001):
            publisher.put(event)
        done = time.time()
        publisher.put(
            Event(v=1, id=uuid.uuid4().hex, type="succeeded", ts=done, task_id=task_id, name="bench.live",
                  root_id=task_id, hostname="celery@bench", pid=1, runtime=0.001, result=True, retries=0)
        )  # fmt: skip
        finished[task_id] = done
    achieved = total / (time.perf_counter() - start)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(t in client.seen for t in finished):
        time.sleep(0.05)
    latencies = [(client.seen[t] - ts) * 1000 for t, ts in finished.items() if t in client.seen]
    if not latencies:
        raise RuntimeError("no task reached the WebSocket client")
    return {
        "tasks": float(total),
        "rate": achieved,
        "received": float(len(latencies)),
        "p50": _pct(latencies, 0.50),
        "p95": _pct(latencies, 0.95),
        "p99": _pct(latencies, 0.99),
        "max": max(latencies),
        "mean": statistics.fmean(latencies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=1000.0, help="tasks per second under load")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the loaded run")
    parser.add_argument("--baseline-rate", type=float, default=10.0)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="3 s under load, 2 s baseline")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.baseline_seconds = 3.0, 2.0

    prefix = f"cfbench_live_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_FLOW_")}
        env["PYTHONPATH"] = str(SRC)
        cmd = [sys.executable, "-m", "celery_flow.cli", "server", "--broker-url", BROKER, "--store",
               f"sqlite:///{tmp}/live.db", "--prefix", prefix, "--port", str(port), "--ttl", "0",
               "--log-level", "warning"]  # fmt: skip
        server = subprocess.Popen(cmd, env=env, start_new_session=True)
        publisher = Publisher(BROKER, prefix)
        client: LiveClient | None = None
        try:
            import httpx

            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start")
                time.sleep(0.2)
            client = LiveClient(f"ws://127.0.0.1:{port}/api/live")
            # Warm-up: the consumer group exists and one task made the whole trip.
            run_load(publisher, client, 50, 0.5)
            print(f"code: {SRC}")
            print("path: Publisher -> Redis stream -> `celery-flow server` (embedded consumer, SQLite) -> WS")
            print(f"{'load':<22} {'tasks':>6} {'tasks/s':>8} {'seen':>6} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'p99 ms':>8} {'max ms':>8}")  # fmt: skip
            for label, rate, seconds in (
                (f"baseline {args.baseline_rate:g}/s", args.baseline_rate, args.baseline_seconds),
                (f"load {args.rate:g}/s", args.rate, args.seconds),
            ):
                r = run_load(publisher, client, rate, seconds)
                cells = [f"{r[k]:>8.1f}" for k in ("p50", "p95", "p99", "max")]
                print(
                    f"{label:<22} {r['tasks']:>6.0f} {r['rate']:>8.0f} {r['received']:>6.0f} "
                    + " ".join(cells)
                )
            print(f"publisher dropped: {publisher.dropped_total}")
        finally:
            if client is not None:
                client.close()
            publisher.stop(2.0)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            import redis

            with contextlib.suppress(Exception):
                redis.Redis.from_url(BROKER).delete(f"{prefix}:events")


if __name__ == "__main__":
    main()
