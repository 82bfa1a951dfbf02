"""Overhead of celery-flow on Celery: plain vs instrumented, alternating runs in one run.

For each pool (solo, prefork) and each celery-flow transport (Redis stream, RabbitMQ, SQS), every round runs
the same workload twice, plain then instrumented (the order alternates between rounds so drift in the
machine's load hits both sides alike):

1. publish N no-op tasks (`ignore_result=True`) from this process while no worker runs, timing every
   `apply_async()` — the publisher-side cost, with celery-flow's `before_task_publish` handler and its
   background publisher thread active in the instrumented run;
2. start a `celery worker` subprocess on that queue and time how long it takes to drain it (from the
   first task taken to the queue being empty and nothing left unacked) — worker throughput, with
   received/started/succeeded events published from the worker in the instrumented run.

3. `--under-load N` (a section of its own): start a prefork worker first, then time a loop of N `.delay()`
   calls while that worker runs them on the same machine (the producer competing with the worker, and
   with celery-flow's publisher thread, for the CPU and the GIL); instrumented rounds then count the
   events that reached the stream (4 per task: nothing lost).

Prints tasks/s and µs per apply_async for each side, the medians over the rounds and the ratios
instrumented/plain. Celery's own broker is Redis in every run; `--transport` picks where celery-flow's
events go. SQS is moto in server mode (a local emulator, started here unless --sqs-url names an endpoint),
so its figures are not AWS's.

    python bench/overhead.py                      # all transports, both pools, 5,000 tasks, 3 rounds
    python bench/overhead.py --transport redis --tasks 2000 --rounds 2 --pools solo
    python bench/overhead.py --transport redis --under-load 3000 --rounds 5    # the producer loop only

`CELERY_FLOW_BENCH_SRC=<checkout>/src` measures another checkout's code (an older commit) with these scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
SRC = Path(os.environ.get("CELERY_FLOW_BENCH_SRC") or REPO / "src")
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(SRC))

from tests.support.canvas_app import make_app  # noqa: E402

import celery_flow  # noqa: E402

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_FLOW = {"redis": "redis://127.0.0.1:6379/0", "amqp": "amqp://guest:guest@127.0.0.1:5672//"}


@dataclass
class Side:
    throughput: list[float] = field(default_factory=list)  # tasks/s (wall clock)
    worker_cpu_us: list[float] = field(default_factory=list)  # worker CPU µs per task (whole process tree)
    apply_us: list[float] = field(default_factory=list)  # mean wall µs per apply_async
    apply_cpu_us: list[float] = field(default_factory=list)  # producer CPU µs per apply_async


_TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (a prefork worker's pool)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out = [pid]
    for child in children(pid):
        out += _tree(child)
    return out


def stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a worker (a warm shutdown), SIGKILL it if it has not exited after `timeout` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tree_cpu(pid: int) -> float:
    """CPU seconds (user+system) used so far by a process and its live descendants.

    CPU time is what celery-flow adds; wall-clock throughput on a machine shared with other work also
    measures the neighbours, so both are reported.
    """
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICK


def publish(app: object, queue: str, n: int) -> tuple[float, float]:
    """Publish n no-op tasks; (mean wall µs per apply_async, CPU µs per apply_async of this process,
    including celery-flow's publisher thread up to its final flush)."""
    noop = app.tasks["t.noop"]  # type: ignore[attr-defined]
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(n):
        noop.apply_async(ignore_result=True, queue=queue)
    wall = (time.perf_counter() - start) / n * 1e6
    celery_flow.shutdown(app, timeout=30)  # flush what the publisher thread still holds (no-op if plain)
    return wall, (time.process_time() - cpu) / n * 1e6


def drain(
    broker_url: str, flow_url: str | None, prefix: str, queue: str, pool: str, n: int
) -> tuple[float, float]:
    """Start a worker on `queue` (already holding n tasks); (tasks/s, worker CPU µs per task), both from
    the first task taken to the queue being empty."""
    client = redis.Redis.from_url(broker_url)
    proc = _worker(broker_url, flow_url, prefix, queue, pool)
    try:
        deadline = time.monotonic() + 120
        while client.llen(queue) >= n:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("worker did not start consuming")
            time.sleep(0.002)
        started = time.perf_counter()
        cpu = tree_cpu(proc.pid)
        while client.llen(queue) > 0 or client.hlen("unacked") > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not drain the queue")
            time.sleep(0.002)
        elapsed = time.perf_counter() - started
        cpu = tree_cpu(proc.pid) - cpu
        return n / elapsed, cpu / n * 1e6
    finally:
        stop(proc, 30)
        client.delete(queue)
        client.close()


def _worker(
    broker_url: str, flow_url: str | None, prefix: str, queue: str, pool: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{SRC}",
        "CFT_BROKER_URL": broker_url,
        "CFT_BACKEND_URL": broker_url,
        "CFT_QUEUE": queue,
        "CFT_FLOW_URL": flow_url or "",
        "CFT_FLOW_PREFIX": prefix,
    }
    args = [sys.executable, "-m", "celery", "-A", "tests.support.canvas_app", "worker", "-P", pool,
            "-c", "2", "-Q", queue, "-n", f"bench-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "ERROR",
            "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_TASK_EVENTS = {"sent", "received", "started", "succeeded"}


def _stream_events(flow_url: str, prefix: str) -> int:
    """Task events in the Redis stream `{prefix}:events` (a batch entry holds many; worker events aside)."""
    client = redis.Redis.from_url(flow_url)
    total, start = 0, "-"
    try:
        while True:
            entries = client.xrange(f"{prefix}:events", min=start, max="+", count=1000)
            for _entry_id, fields in entries:
                lines = fields[b"b"].split(b"\n") if b"b" in fields else [fields[b"e"]]
                total += sum(json.loads(line).get("type") in _TASK_EVENTS for line in lines)
            if len(entries) < 1000:
                return total
            start = "(" + entries[-1][0].decode()
    finally:
        client.close()


def under_load(broker_url: str, flow_url: str, n: int, rounds: int) -> list[str]:
    """Time `n` `.delay()` calls while a prefork worker runs them, plain and instrumented in turn."""
    loops: dict[str, list[float]] = {"plain": [], "instrumented": []}
    # CPU µs per task of this process (caller + publisher thread) and of the worker's tree, over the loop:
    # less at the mercy of the neighbours than wall time, and it says who pays.
    cpu: dict[str, list[tuple[float, float]]] = {"plain": [], "instrumented": []}
    for round_ in range(rounds):
        order = ["plain", "instrumented"] if round_ % 2 == 0 else ["instrumented", "plain"]
        for mode in order:
            queue = f"bench_{uuid.uuid4().hex[:8]}"
            prefix = f"bench_{uuid.uuid4().hex[:8]}"
            app = make_app(broker_url, broker_url, None, None, main=f"bench_{mode}", queue=queue)
            inst = mode == "instrumented"
            if inst:
                celery_flow.init(app, transport_url=flow_url, prefix=prefix)
            noop = app.tasks["t.noop"]
            client = redis.Redis.from_url(broker_url)
            proc = _worker(broker_url, flow_url if inst else None, prefix, queue, "prefork")
            try:
                noop.delay()  # the worker is up once this first task is taken
                deadline = time.monotonic() + 120
                while client.llen(queue) or client.hlen("unacked"):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("worker did not start consuming")
                    time.sleep(0.01)
                time.sleep(0.5)  # its pool settled
                start = time.perf_counter()
                own, worker = time.process_time(), tree_cpu(proc.pid)
                for _ in range(n):
                    noop.delay()
                elapsed = time.perf_counter() - start
                own, worker = time.process_time() - own, tree_cpu(proc.pid) - worker
                loops[mode].append(elapsed)
                cpu[mode].append((own / n * 1e6, worker / n * 1e6))
                while client.llen(queue) or client.hlen("unacked"):
                    if time.monotonic() > deadline:
                        raise RuntimeError("worker did not drain the queue")
                    time.sleep(0.01)
                counted = ""
                if inst:
                    celery_flow.shutdown(app, timeout=30)
                    expected = 4 * (n + 1)
                    while _stream_events(flow_url, prefix) < expected and time.monotonic() < deadline:
                        time.sleep(0.1)
                    got = _stream_events(flow_url, prefix)
                    counted = f", events {got}/{expected}" + ("" if got == expected else "  <- MISMATCH")
                print(f"  under load round {round_ + 1} {mode:12} {n} delay() in {elapsed:6.3f} s, CPU µs "
                      f"per delay: caller {own / n * 1e6:4.0f}, worker {worker / n * 1e6:4.0f}{counted}",
                      flush=True)  # fmt: skip
            finally:
                stop(proc, 30)
                client.delete(queue)
                client.close()
                _cleanup("redis", flow_url, prefix)
    ratios = [round(i / p, 3) for i, p in zip(loops["instrumented"], loops["plain"], strict=True)]
    plain_s, inst_s = statistics.median(loops["plain"]), statistics.median(loops["instrumented"])
    caller = [statistics.median(c[0] for c in cpu[m]) for m in ("instrumented", "plain")]
    worker = [statistics.median(c[1] for c in cpu[m]) for m in ("instrumented", "plain")]
    return [
        f"redis prefork  {n} delay() under load: ratio {inst_s / plain_s:.3f} of medians "
        f"({inst_s:.3f} vs {plain_s:.3f} s); per round {ratios}, median {statistics.median(ratios):.3f}",
        f"{'':14} CPU µs per delay during the loop (medians): caller {caller[0]:.0f} vs {caller[1]:.0f}, "
        f"worker {worker[0]:.0f} vs {worker[1]:.0f} (instrumented vs plain)",
    ]


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
                apply_us, apply_cpu = publish(app, queue, n)
                tps, cpu = drain(
                    broker_url, flow_url if mode == "instrumented" else None, prefix, queue, pool, n
                )
                side = sides[mode]
                side.throughput.append(tps)
                side.worker_cpu_us.append(cpu)
                side.apply_us.append(apply_us)
                side.apply_cpu_us.append(apply_cpu)
                print(
                    f"  {transport:5} {pool:8} round {round_ + 1} {mode:12} {tps:6.0f} tasks/s"
                    f" worker CPU {cpu:5.0f} µs/task"
                    f"  apply_async {apply_us:5.0f} µs (CPU {apply_cpu:4.0f} µs)",
                    flush=True,
                )
        lines += summarize(transport, pool, sides["plain"], sides["instrumented"])
    _cleanup(transport, flow_url, prefix)
    return lines


def summarize(transport: str, pool: str, plain: Side, inst: Side) -> list[str]:
    def med(side: Side, attr: str) -> float:
        return float(statistics.median(getattr(side, attr)))

    def ratio(attr: str) -> float:
        return med(inst, attr) / med(plain, attr)

    spread = [round(i / p, 3) for i, p in zip(inst.throughput, plain.throughput, strict=True)]
    return [
        f"{transport:5} {pool:8} throughput ratio {ratio('throughput'):.3f} "
        f"({med(inst, 'throughput'):.0f} vs {med(plain, 'throughput'):.0f} tasks/s; per round {spread}); "
        f"worker CPU per task ratio {ratio('worker_cpu_us'):.3f} "
        f"({med(inst, 'worker_cpu_us'):.0f} vs {med(plain, 'worker_cpu_us'):.0f} µs)",
        f"{'':5} {'':8} apply_async wall ratio {ratio('apply_us'):.3f} "
        f"({med(inst, 'apply_us'):.0f} vs {med(plain, 'apply_us'):.0f} µs); "
        f"producer CPU per apply_async ratio {ratio('apply_cpu_us'):.3f} "
        f"({med(inst, 'apply_cpu_us'):.0f} vs {med(plain, 'apply_cpu_us'):.0f} µs)",
    ]


def _cleanup(transport: str, flow_url: str, prefix: str) -> None:
    try:
        if transport == "redis":
            client = redis.Redis.from_url(flow_url)
            client.delete(f"{prefix}:events")
            client.close()
        elif transport == "sqs":
            from celery_flow.transport.sqs import SqsTransport

            t = SqsTransport(flow_url, prefix=prefix)
            sqs = t.client()
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=t.queue)["QueueUrl"])
            sqs.close()
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


@contextlib.contextmanager
def sqs_endpoint(url: str) -> Iterator[str]:
    """`url`, else (empty) a moto server of this run's own."""
    if url:
        yield url
        return
    from tests.support.moto_server import MotoServer

    with MotoServer() as server:
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transport", choices=["redis", "amqp", "sqs", "all"], default="all")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pools", default="solo,prefork")
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_FLOW_REDIS_URL", DEFAULT_FLOW["redis"]))
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_FLOW_AMQP_URL", DEFAULT_FLOW["amqp"]))
    parser.add_argument("--sqs-url", default=os.environ.get("BENCH_FLOW_SQS_URL", ""))
    parser.add_argument("--under-load", type=int, default=0, metavar="N",
                        help="only time N .delay() calls beside a prefork worker (Redis)")  # fmt: skip
    opts = parser.parse_args()
    if opts.under_load:
        print(f"celery-flow producer under load: code {SRC}")
        lines = under_load(opts.broker_url, opts.redis_url, opts.under_load, opts.rounds)
        print("\nsummary (ratio = instrumented / plain loop time; target <= 1.05):")
        for line in lines:
            print("  " + line)
        return
    transports = ["redis", "amqp", "sqs"] if opts.transport == "all" else [opts.transport]
    pools = [p.strip() for p in opts.pools.split(",") if p.strip()]
    print(f"celery-flow overhead: {opts.tasks} no-op tasks per run, {opts.rounds} rounds, pools {pools}")
    summary: list[str] = []
    with sqs_endpoint(opts.sqs_url if "sqs" in transports else "-") as sqs_url:
        urls = {"redis": opts.redis_url, "amqp": opts.amqp_url, "sqs": sqs_url}
        for transport in transports:
            summary += run(transport, urls[transport], opts.broker_url, pools, opts.tasks, opts.rounds)
    print(
        "\nsummary (medians; ratio = instrumented / plain; target throughput >= 0.95, apply_async <= 1.10):"
    )
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
