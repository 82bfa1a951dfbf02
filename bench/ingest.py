"""Ingest throughput: events folded into the store per second.

Two measurements, printed as tables:

1. `store.apply()` directly, in batches, into a fresh SQLite file and a fresh PostgreSQL database
   (the fold + SQL cost alone, one core), with the search indexer run as a consumer runs it (every
   INDEX_INTERVAL seconds): events per CPU-second of both, of the fold alone, and task rows indexed per
   CPU-second of the indexer.
2. Broker -> `celery-flow consume` processes -> store, with 1, 2 and 4 consume processes sharing one
   consumer group: the events are published to the real broker (Redis Streams or RabbitMQ) while the
   consumers run, and the clock stops when the store holds every event and the search index has caught
   up; also events per CPU-second of the consume processes (all their threads), and events/s until the
   store held every event (the search indexer runs behind the fold, up to ~1.5 s later).

The event streams are realistic (bench/_common.py): flows of a root, a chain and a chord, 32 events each,
interleaved in time order. Usage:

    python bench/ingest.py                         # both parts, Redis
    python bench/ingest.py --transport amqp        # part 2 through RabbitMQ
    python bench/ingest.py --flows 5000 --skip-stream
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import EVENTS_PER_FLOW, batches, stream
from celery_flow import consumer
from celery_flow.events import Event, encode
from celery_flow.store import open_store

PG_ADMIN = os.environ.get("CELERY_FLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
BROKERS = {
    "redis": os.environ.get("CELERY_FLOW_BENCH_REDIS", "redis://127.0.0.1:6379/15"),
    "amqp": os.environ.get("CELERY_FLOW_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//"),
}


class PgDatabase:
    """A PostgreSQL database created for one measurement and dropped afterwards."""

    def __init__(self) -> None:
        import psycopg

        self.name = f"celery_flow_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"{PG_ADMIN}/{self.name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(f"{PG_ADMIN}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class ApplyFigures(NamedTuple):
    rate: float  # events/s overall, indexing included
    tail: float  # events/s of the last quarter (the tables are not tiny then)
    fold_cpu: float  # events per CPU-second of this process in store.apply alone
    index_cpu: float | None  # task rows indexed per CPU-second of the search indexer (None: no indexer)
    all_cpu: float  # events per CPU-second of both: everything ingest costs this process
    indexed: int  # task rows indexed


def measure_apply(url: str, events: list[Event], batch: int) -> ApplyFigures:
    """Fold `events` with `store.apply()` in batches, and run the search indexer as a consumer does (every
    INDEX_INTERVAL seconds, leaving the last INDEX_SETTLE seconds' rows, and at the end until it has caught
    up); a store without one (a base commit
    before it) indexes in apply. CPU figures are this process's: for PostgreSQL they leave out the
    server's own work."""
    store = open_store(url)
    index = getattr(store, "index_search", None)
    tune = getattr(consumer, "tune_gc", None)  # as a `consume` process runs the fold (not in a base commit)
    if tune is not None:
        tune()
    interval = 1.0  # store/search.py INDEX_INTERVAL, as a consumer runs the indexer
    try:
        chunks = list(batches(events, batch))
        quarter = len(chunks) * 3 // 4
        fold_cpu = index_cpu = 0.0
        indexed = 0
        start = time.perf_counter()
        mark = start
        next_index = time.monotonic() + interval
        for i, chunk in enumerate(chunks):
            if i == quarter:
                mark = time.perf_counter()
            cpu = time.process_time()
            store.apply(chunk)
            fold_cpu += time.process_time() - cpu
            if index is not None and (time.monotonic() >= next_index or i == len(chunks) - 1):
                cpu = time.process_time()
                while True:  # at the end: until caught up, with nothing left to settle
                    run = index(settle=0.5 if i < len(chunks) - 1 else 0.0)  # search.INDEX_SETTLE
                    indexed += run.indexed
                    if not run.lag or i < len(chunks) - 1:
                        break
                index_cpu += time.process_time() - cpu
                next_index = time.monotonic() + (0.0 if run.lag else interval)
        end = time.perf_counter()
        assert store.stats().events == len(events), "not every event was stored"
        assert getattr(store.stats(), "search_lag", 0) == 0, "the search index did not catch up"
        tail = sum(len(c) for c in chunks[quarter:])
        return ApplyFigures(
            len(events) / (end - start), tail / (end - mark), len(events) / fold_cpu,
            indexed / index_cpu if index is not None and index_cpu else None,
            len(events) / (fold_cpu + index_cpu), indexed,
        )  # fmt: skip
    finally:
        store.close()


def cpu_seconds(pid: int) -> float:
    """CPU seconds a process used so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_stream(
    transport_name: str, store_url: str, events: list[Event], processes: int, batch: int | None
) -> tuple[float, float, float]:
    """(events/s from the first publish until the store holds them all and has indexed them, events per
    CPU-second of the consumers, events/s until the store holds them all), with `processes` consumers."""
    from celery_flow.transport import from_url

    broker = BROKERS[transport_name]
    prefix = f"cfbench_{uuid.uuid4().hex[:8]}"
    store = open_store(store_url)
    env = {**os.environ, "CELERY_FLOW_TTL": "0", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "celery_flow.cli", "consume", "--broker-url", broker, "--store", store_url,
           "--prefix", prefix, "--log-level", "warning"]  # fmt: skip
    if batch is not None:  # None: the consume command's own default (the code measured's)
        cmd += ["--batch", str(batch)]
    procs = [subprocess.Popen(cmd, env=env) for _ in range(processes)]
    transport = from_url(broker, prefix=prefix)
    try:
        # Warm up: the consumers have declared their group/queue once one event made it through.
        warm = Event(v=1, id=uuid.uuid4().hex, type="sent", ts=time.time(), task_id="warmup-" + prefix)
        deadline = time.monotonic() + 60
        while store.stats().events < 1:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("the consumers did not start (see their output above)")
            transport.publish([encode(warm)])
            time.sleep(0.5)
        payloads = [encode(e) for e in events]
        total = len(events) + 1
        cpu_before = [cpu_seconds(p.pid) for p in procs]
        start = time.perf_counter()
        for chunk in batches(payloads, 1000):  # type: ignore[arg-type]
            transport.publish(chunk)
        deadline = time.monotonic() + 600
        stored: float | None = None
        while (st := store.stats()).events < total or getattr(st, "search_lag", 0):
            if stored is None and st.events >= total:
                stored = time.perf_counter()  # the indexer (behind the fold) may still be running
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {st.events}/{total} events stored and indexed after 600 s")
            time.sleep(0.05)
        end = time.perf_counter()
        per_cpu = len(events) / (sum(cpu_seconds(p.pid) for p in procs) - sum(cpu_before))
        return len(events) / (end - start), per_cpu, len(events) / ((stored or end) - start)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        transport.close()
        store.close()
        drop_broker_state(broker, prefix)


def drop_broker_state(broker: str, prefix: str) -> None:
    """Delete the stream / exchange and queue this run created."""
    if broker.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker)
        client.delete(f"{prefix}:events")
        client.close()
    else:
        import kombu

        with kombu.Connection(broker) as conn:
            channel = conn.channel()
            channel.queue_delete(f"{prefix}.events")
            channel.exchange_delete(f"{prefix}.events")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=4000, help="flows for store.apply (32 events each)")
    parser.add_argument("--stream-flows", type=int, default=2500, help="flows for the broker runs (< maxlen)")
    parser.add_argument("--batch", type=int, default=1000, help="events per store.apply()")
    parser.add_argument("--stream-batch", type=int, help="consume --batch (default: the command's own)")
    parser.add_argument("--transport", choices=sorted(BROKERS), default="redis")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--stream-store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--skip-apply", action="store_true")
    args = parser.parse_args()

    events = stream(args.flows)
    print(
        f"store.apply, {len(events):,} events ({args.flows:,} flows x {EVENTS_PER_FLOW}), batch {args.batch}"
    )
    print(
        f"{'engine':<12} {'events/s':>10} {'last 25%':>10} {'per CPU-s':>10} {'fold only':>10} "
        f"{'indexed/CPU-s':>14} {'tasks indexed':>14}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for engine in [] if args.skip_apply else args.engines.split(","):
            pg = PgDatabase() if engine == "postgresql" else None
            url = pg.url if pg else f"sqlite:///{tmp}/apply-{uuid.uuid4().hex[:6]}.db"
            try:
                f = measure_apply(url, events, args.batch)
            finally:
                if pg:
                    pg.drop()
            index_rate = f"{f.index_cpu:,.0f}" if f.index_cpu is not None else "in apply"
            print(
                f"{engine:<12} {f.rate:>10,.0f} {f.tail:>10,.0f} {f.all_cpu:>10,.0f} {f.fold_cpu:>10,.0f} "
                f"{index_rate:>14} {f.indexed:>14,}",
                flush=True,
            )

        if args.skip_stream:
            return
        events = stream(args.stream_flows, seed=2)
        route = f"{args.transport} -> consume -> {args.stream_store}"
        shown = args.stream_batch or "consume's default"
        print(f"\n{route}, {len(events):,} events, batch {shown}")
        print(f"{'consumers':<12} {'events/s':>10} {'per CPU-s':>10} {'stored/s':>10}")
        for n in (int(p) for p in args.processes.split(",")):
            pg = PgDatabase() if args.stream_store == "postgresql" else None
            url = pg.url if pg else f"sqlite:///{tmp}/stream-{n}.db"
            try:
                rate, per_cpu, stored = measure_stream(args.transport, url, events, n, args.stream_batch)
            finally:
                if pg:
                    pg.drop()
            print(f"{n:<12} {rate:>10,.0f} {per_cpu:>10,.0f} {stored:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
