"""CPU instructions per no-op task, plain vs instrumented, counted by valgrind (callgrind).

Throughput ratios on a shared 2-core VM move by ±5% from one round to the next, more than the cost being
measured. Instruction counts do not: the same run gives the same count to a fraction of a per mille, so a
change of 1% in what celery-flow costs a worker shows, and can be traced to a function (the dump files
are kept; open them with `callgrind_annotate`). They do not show cache misses, lock hand-offs or the
broker's own CPU, which the throughput benchmark (bench/overhead.py) does.

For each pool and mode, a `celery worker` runs under callgrind (its prefork children too, each thread
counted apart): it first drains 200 tasks to warm up, then the counters are zeroed, it drains `--tasks`
no-op tasks, and the counters are dumped. Under valgrind the worker runs about 50 times slower, so
celery-flow's publisher flushes every `--flush-interval` seconds (10 by default, instead of 0.2) to keep
its batches the size they have at full speed.

    python bench/instructions.py                       # solo and prefork, 1,000 tasks: ~10 minutes
    python bench/instructions.py --pools solo --tasks 500
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from overhead import children, stop

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
WARMUP = 200

# Starts `celery worker` with the publisher's flush interval scaled to valgrind's slowdown.
_WORKER = (
    "import sys, celery_flow.tracking.publisher as p; p.FLUSH_INTERVAL = float(sys.argv.pop(1)); "
    "from celery.__main__ import main; main()"
)


def _publish(broker_url: str, queue: str, n: int) -> None:
    from tests.support.canvas_app import make_app

    app = make_app(broker_url, broker_url, None, None, main="bench_instructions", queue=queue)
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.tasks["t.noop"].apply_async(ignore_result=True, queue=queue, producer=producer)


def _drained(client: redis.Redis, queue: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.llen(queue) > 0 or client.hlen("unacked") > 0:
        if proc.poll() is not None:
            raise RuntimeError("the worker exited")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker did not drain {queue} in {timeout:.0f} s")
        time.sleep(0.2)


def measure(
    broker_url: str, flow_url: str | None, pool: str, n: int, flush: float, out: Path
) -> dict[str, int]:
    """Instructions per task of each process/thread of one worker: {"main", "main threads", "children"}."""
    queue = f"bench_ins_{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(broker_url)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}",
        "PYTHONHASHSEED": "0",
        "CFT_BROKER_URL": broker_url,
        "CFT_BACKEND_URL": broker_url,
        "CFT_QUEUE": queue,
        "CFT_FLOW_URL": flow_url or "",
        "CFT_FLOW_PREFIX": f"bench_ins_{uuid.uuid4().hex[:8]}",
    }
    args = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--separate-threads=yes",
            f"--callgrind-out-file={out}/cg.%p", sys.executable, "-c", _WORKER, str(flush),
            "-A", "tests.support.canvas_app", "worker", "-P", pool, "-c", "2", "-Q", queue,
            "-n", f"ins-{uuid.uuid4().hex[:6]}@%h", "--loglevel", "ERROR",
            "--without-mingle", "--without-gossip", "--without-heartbeat"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _publish(broker_url, queue, WARMUP)
        _drained(client, queue, proc, 600)
        time.sleep(1.0)  # the last acks and the publisher's batch of the warm-up
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        if pool == "prefork":
            for child in children(proc.pid):
                subprocess.run(["callgrind_control", "-z", str(child)], check=True, capture_output=True)
        _publish(broker_url, queue, n)
        _drained(client, queue, proc, 60 + n)
        time.sleep(flush + 1.0)  # the publisher's last batch of these tasks
        pids = [proc.pid, *(children(proc.pid) if pool == "prefork" else [])]
        for pid in pids:
            subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        return _totals(out, proc.pid, n)
    finally:
        stop(proc, 120)
        client.delete(queue)
        client.close()


def _totals(out: Path, main_pid: int, n: int) -> dict[str, int]:
    """Sum the first dump (`cg.PID.1-TT`, thread TT) of every process: per task, by role."""
    totals = {"main": 0, "main threads": 0, "children": 0}
    for path in glob.glob(str(out / "cg.*.1-*")):
        m = re.search(r"cg\.(\d+)\.1-(\d+)$", path)
        if not m:
            continue
        with open(path) as fh:
            summary = next((int(line.split()[1]) for line in fh if line.startswith("summary:")), 0)
        pid, thread = int(m.group(1)), int(m.group(2))
        role = ("main" if thread == 1 else "main threads") if pid == main_pid else "children"
        totals[role] += summary
    return {k: round(v / n) for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--pools", default="solo,prefork")
    parser.add_argument("--flush-interval", type=float, default=10.0)
    parser.add_argument("--broker-url", default=os.environ.get("BENCH_BROKER_URL", DEFAULT_BROKER))
    parser.add_argument("--flow-url", default=os.environ.get("BENCH_FLOW_REDIS_URL", DEFAULT_BROKER))
    parser.add_argument("--keep", help="keep the callgrind files in this directory")
    opts = parser.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("bench/instructions.py needs valgrind (apt-get install valgrind)")
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "src"))
    print(f"instructions per no-op task (callgrind): {opts.tasks} tasks after {WARMUP}", flush=True)
    lines = []
    for pool in opts.pools.split(","):
        counts = {}
        for mode in ("plain", "instrumented"):
            out = Path(opts.keep) / f"{pool}-{mode}" if opts.keep else Path(tempfile.mkdtemp(prefix="cg-"))
            out.mkdir(parents=True, exist_ok=True)
            try:
                flow = opts.flow_url if mode == "instrumented" else None
                counts[mode] = measure(opts.broker_url, flow, pool, opts.tasks, opts.flush_interval, out)
            finally:
                if not opts.keep:
                    shutil.rmtree(out, ignore_errors=True)
            c = counts[mode]
            print(f"  {pool:8} {mode:12} main thread {c['main']:>9,}  other threads of the main process "
                  f"{c['main threads']:>7,}  pool children {c['children']:>9,}", flush=True)  # fmt: skip
        plain, inst = counts["plain"], counts["instrumented"]
        main_ratio = (inst["main"] + inst["main threads"]) / (plain["main"] + plain["main threads"])
        total_ratio = sum(inst.values()) / sum(plain.values())
        lines.append(
            f"{pool:8} main process {main_ratio:.3f} (+{inst['main'] - plain['main']:,} main thread, "
            f"+{inst['main threads'] - plain['main threads']:,} publisher/heartbeat threads per task); "
            f"whole worker {total_ratio:.3f} ({sum(inst.values()):,} vs {sum(plain.values()):,} per task)"
        )
    print("\nsummary (ratio = instrumented / plain instructions per task):")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
