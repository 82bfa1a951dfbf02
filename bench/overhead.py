"""Overhead of celery-flow on Celery: plain vs instrumented, alternating runs in one run.

For each pool (solo, prefork) and each celery-flow transport (Redis stream, RabbitMQ), every round runs
the same workload twice, plain then instrumented (the order alternates between rounds so drift in the
machine's load hits both sides alike):

1. publish N no-op tasks (`ignore_result=True`) from this process while no worker runs, timing every
   `apply_async()` — the publisher-side cost, with celery-flow's `before_task_publish` handler and its
   background publisher thread active in the instrumented run;
2. start a `celery worker` subprocess on that queue and time how long it takes to drain it (from the
   first task taken to the queue being empty and nothing left unacked) — worker throughput, with
   received/started/succeeded events published from the worker in the instrumented run.

Prints tasks/s and µs per apply_async for each side, the medians over the rounds and the ratios
instrumented/plain. Celery's own broker is Redis in every run; `--transport` picks where celery-flow's
events go.

    python bench/overhead.py                      # both transports, both pools, 5,000 tasks, 3 rounds
    python bench/overhead.py --transport redis --tasks 2000 --rounds 2 --pools solo
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

import celery_flow  # noqa: E402
from tests.support.canvas_app import make_app  # noqa: E402

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_FLOW = {"redis": "redis://127.0.0.1:6379/0", "amqp": "amqp://guest:guest@127.0.0.1:5672//"}


@dataclass
class Side:
    throughput: list[float] = field(default_factory=list)  # tasks/s
    apply_us: list[float] = field(default_factory=list)  # mean µs per apply_async


def publish(app: object, queue: str, n: int) -> float:
    """Publish n no-op tasks; mean µs per apply_async."""
    noop = app.tasks["t.noop"]  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(n):
        noop.apply_async(ignore_result=True, queue=queue)
    return (time.perf_counter() - start) / n * 1e6


def drain(broker_url: str, flow_url: str | None, prefix: str, queue: str, pool: str, n: int) -> float:
    """Start a worker on `queue` (already holding n tasks); tasks/s from first take to empty."""
    client = redis.Redis.from_url(broker_url)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}",
        "CFT_BROKER_URL": broker_url,
        "CFT_BACKEND_URL": broker_url,
        "CFT_QUEUE": queue,
        "CFT_FLOW_URL": flow_url or "",
        "CFT_FLOW_PREFIX": prefix,
    }
    args = [sys.executable, "-m", "celery", "-A", "tests.support.canvas_app", "worker", "-P", pool,
            "-c", "2", "-Q", queue, "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "ERROR",
            "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while client.llen(queue) >= n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("worker did not start consuming")
            time.sleep(0.002)
        started = time.perf_counter()
        while client.llen(queue) > 0 or client.hlen("unacked") > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not drain the queue")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        return n / elapsed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        client.delete(queue)
        client.close()


def run(transport: str, flow_url: str, broker_url: str, pools: list[str], n: int, rounds: int) -> list[str]:
    lines: list[str] = []
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    for pool in pools:
        sides = {"plain": Side(), "instrumented": Side()}
        for round_ in range(rounds):
            order = ["plain", "instrumented"] if round_ % 2 == 0 else ["instrumented", "plain"]
            for mode in order:
                queue = f"bench_{uuid.uuid4().hex[:8]}"
                app = make_app(broker_url, broker_url, None, None, main=f"bench_{mode}", queue=queue)
                if mode == "instrumented":
                    celery_flow.init(app, transport_url=flow_url, prefix=prefix)
                try:
                    apply_us = publish(app, queue, n)
                finally:
                    if mode == "instrumented":
                        celery_flow.shutdown(app, timeout=10)
                tps = drain(broker_url, flow_url if mode == "instrumented" else None, prefix, queue, pool, n)
                sides[mode].throughput.append(tps)
                sides[mode].apply_us.append(apply_us)
                print(
                    f"  {transport:5} {pool:8} round {round_ + 1} {mode:12} {tps:8.0f} tasks/s"
                    f"  apply_async {apply_us:6.0f} µs",
                    flush=True,
                )
        plain, inst = sides["plain"], sides["instrumented"]
        tp_ratio = statistics.median(inst.throughput) / statistics.median(plain.throughput)
        ap_ratio = statistics.median(inst.apply_us) / statistics.median(plain.apply_us)
        spread = [round(i / p, 3) for i, p in zip(inst.throughput, plain.throughput, strict=True)]
        lines.append(
            f"{transport:5} {pool:8} throughput plain {statistics.median(plain.throughput):6.0f}/s, "
            f"instrumented {statistics.median(inst.throughput):6.0f}/s, ratio {tp_ratio:.3f} "
            f"(per round {spread}); apply_async plain {statistics.median(plain.apply_us):.0f} µs, "
            f"instrumented {statistics.median(inst.apply_us):.0f} µs, ratio {ap_ratio:.3f}"
        )
    _cleanup(transport, flow_url, prefix)
    return lines


def _cleanup(transport: str, flow_url: str, prefix: str) -> None:
    try:
        if transport == "redis":
            client = redis.Redis.from_url(flow_url)
            client.delete(f"{prefix}:events")
            client.close()
        else:
            import amqp

            from celery_flow.transport.amqp import exchange_name, parse_amqp_url, queue_name

            p = parse_amqp_url(flow_url)
            conn = amqp.Connection(
                host=p.hostport, userid=p.userid, password=p.password, virtual_host=p.vhost
            )
            conn.connect()
            channel = conn.channel()
            channel.queue_delete(queue_name(prefix))
            channel.exchange_delete(exchange_name(prefix))
            conn.close()
    except Exception as exc:  # cleanup only
        print(f"  (cleanup of {prefix} failed: {exc})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transport", choices=["redis", "amqp", "both"], default="both")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="solo,prefork")
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_FLOW_REDIS_URL", DEFAULT_FLOW["redis"]))
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_FLOW_AMQP_URL", DEFAULT_FLOW["amqp"]))
    opts = parser.parse_args()
    transports = ["redis", "amqp"] if opts.transport == "both" else [opts.transport]
    pools = [p.strip() for p in opts.pools.split(",") if p.strip()]
    print(f"celery-flow overhead: {opts.tasks} no-op tasks per run, {opts.rounds} rounds, pools {pools}")
    summary: list[str] = []
    for transport in transports:
        url = opts.redis_url if transport == "redis" else opts.amqp_url
        summary += run(transport, url, opts.broker_url, pools, opts.tasks, opts.rounds)
    print(
        "\nsummary (medians; ratio = instrumented / plain; target throughput >= 0.95, apply_async <= 1.10):"
    )
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
