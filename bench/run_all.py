"""Run every benchmark in one go and write bench/RESULTS.md (`make bench`).

Each benchmark is its own script that prints its figures next to the baseline it measured in the same
run (plain vs instrumented Celery, `store.apply()` alone vs through the broker, an empty store vs 1M
tasks, a trickle vs 1,000 tasks/s...). This driver runs them one after another (never in parallel: they
would measure each other), each in its own process with a time limit, and collects their output verbatim
into RESULTS.md together with the machine it ran on. A script that is missing or fails is reported as
such in RESULTS.md; the others still run.

    python bench/run_all.py            # the full run (aim: under 20 minutes on 2 cores)
    python bench/run_all.py --quick    # a smoke run with small sizes (~7 minutes)
    python bench/run_all.py --only live_latency,ingest
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


@dataclass
class Bench:
    name: str
    script: str
    title: str
    what: str
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)
    timeout: float = 600.0
    quick_timeout: float = 240.0


BENCHES = [
    Bench(
        "overhead",
        "overhead.py",
        "Overhead on Celery throughput",
        "Plain vs instrumented Celery (events over Redis, RabbitMQ and SQS (moto), solo and prefork), "
        "alternating runs in one process tree; median ratio and spread.",
        quick=["--tasks", "1000", "--rounds", "2"],
        timeout=900,
        quick_timeout=420,
    ),
    Bench(
        "instructions",
        "instructions.py",
        "Overhead in CPU instructions per task (callgrind)",
        "Plain vs instrumented `celery worker` under valgrind's callgrind, solo and prefork: instructions "
        "per no-op task for the main thread, the main process's other threads and the pool children. "
        "Exact from run to run where throughput moves by a few percent; needs valgrind.",
        quick=["--tasks", "300", "--pools", "solo"],
        timeout=1800,
        quick_timeout=600,
    ),
    Bench(
        "ingest",
        "ingest.py",
        "Ingest: store.apply() per engine",
        "Events folded per second by `store.apply()` alone (SQLite file, PostgreSQL), plus the broker path "
        "with 1, 2 and 4 consume processes into SQLite.",
        quick=["--flows", "600", "--stream-flows", "300"],
        timeout=420,
    ),
    Bench(
        "ingest_consumers",
        "ingest_consumers.py",
        "Ingest: broker -> 1, 2, 4 `consume` processes, per store",
        "Redis stream -> N `celery-flow consume` processes (one consumer group) -> SQLite / PostgreSQL; "
        "baseline: `store.apply()` alone on the same events.",
        quick=["--stream-flows", "300"],
        timeout=420,
    ),
    Bench(
        "api_baseline",
        "api.py",
        "API baseline: 10,000 tasks",
        "The same requests as the next section on a small store (10,000 tasks + the 1,000-node flow): "
        "the baseline for the figures at 1,000,000 tasks.",
        full=["--tasks", "10000", "--db", "/tmp/celery-flow-bench/api-10k.db"],
        quick=["--tasks", "10000", "--db", "/tmp/celery-flow-bench/api-10k.db", "--requests", "30"],
        timeout=300,
    ),
    Bench(
        "api",
        "api.py",
        "API at scale: 1,000,000 tasks",
        "p50/p95/p99 of every list endpoint and of a 1,000-node flow graph with 1,000,000 tasks stored "
        "(SQLite, real HTTP), and the server's RSS at that size. The store file is kept between runs "
        "(/tmp/celery-flow-bench/api-1m.db): the first run spends most of its time populating it. "
        "`--quick` uses 100,000 tasks.",
        full=["--tasks", "1000000", "--db", "/tmp/celery-flow-bench/api-1m.db"],
        quick=["--tasks", "100000", "--db", "/tmp/celery-flow-bench/api-100k.db", "--requests", "30"],
        timeout=1800,
        quick_timeout=600,
    ),
    Bench(
        "live_latency",
        "live_latency.py",
        "Live latency: task_postrun -> WebSocket",
        "Time from a task's `succeeded` event (stamped at task_postrun) to the WebSocket frame showing it "
        "SUCCESS, through the real publisher, Redis, the server's embedded consumer, SQLite and /api/live; "
        "baseline: a trickle of 10 tasks/s.",
        quick=["--quick"],
        timeout=180,
    ),
    Bench(
        "transport",
        "transport.py",
        "Transport throughput: Redis Streams vs RabbitMQ vs SQS (moto)",
        "Events/s through `Transport.publish()` and `Subscription.read()+ack()`, every broker, one run.",
        quick=["--events", "5000"],
        timeout=300,
    ),
    Bench(
        "ui_graph",
        "ui_graph.py",
        "UI: 2,000-task flow graph",
        "Headless Chromium against the real server: navigation -> graph drawn, click -> detail panel.",
        timeout=300,
    ),
    Bench(
        "big-flows",
        "bigflow.py",
        "Flows of any size: 10 to 500,000 tasks",
        "One chord each of 10, 10,000, 100,000 and 500,000 tasks in one SQLite store, served collapsed by "
        "a real `celery-flow server`: graph response time and size, the server's RSS, time to the first "
        "node in headless Chromium. `--quick` stops at 100,000.",
        quick=["--sizes", "10,10000,100000"],
        timeout=1500,
    ),
]


def _accepts_quick(path: Path) -> bool:
    try:
        return "--quick" in path.read_text(encoding="utf-8")
    except OSError:
        return False


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for module in ("celery", "kombu", "redis", "fastapi", "uvicorn", "psycopg"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except Exception:
            continue
    return (
        f"{os.cpu_count()} CPUs ({cpu}){mem}; Linux {platform.release()}; "
        f"Python {platform.python_version()}; " + ", ".join(versions)
    )


_PROGRESS = re.compile(r"^\s*[\d,]+ tasks, [\d,]+ events, [\d,]+ events/s$")


def _squeeze_progress(output: str) -> str:
    """Keep only the last of a run of progress lines (bench/api.py prints one per 16,000 tasks stored)."""
    lines = output.splitlines()
    last = len(lines) - 1
    kept = [line for i, line in enumerate(lines)
            if not (_PROGRESS.match(line) and i < last and _PROGRESS.match(lines[i + 1]))]  # fmt: skip
    return "\n".join(kept)


def run_one(bench: Bench, quick: bool) -> tuple[str, str, float]:
    """(status, output, seconds) of one benchmark script."""
    path = BENCH / bench.script
    if not path.exists():
        return "missing", f"bench/{bench.script} is not in this checkout.", 0.0
    args = list(bench.quick if quick else bench.full)
    if quick and not bench.quick and _accepts_quick(path):
        args = ["--quick"]
    cmd = [sys.executable, str(path), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_FLOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("CELERY_FLOW_BENCH_REDIS", "CELERY_FLOW_BENCH_AMQP", "CELERY_FLOW_BENCH_PG"):
        if key in os.environ:
            env[key] = os.environ[key]
    timeout = bench.quick_timeout if quick else bench.timeout
    print(
        f"==> {bench.name}: {' '.join(['bench/' + bench.script, *args])} (limit {timeout:.0f} s)", flush=True
    )
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                              start_new_session=True)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return "timeout", out + f"\n(stopped after {timeout:.0f} s)", time.monotonic() - start
    elapsed = time.monotonic() - start
    out = _squeeze_progress(proc.stdout.rstrip())
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return "failed", f"{out}\n\nexit code {proc.returncode}; stderr (last lines):\n{tail}", elapsed
    return "ok", out, elapsed


def render(results: list[tuple[Bench, str, str, float]], quick: bool, total: float) -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick smoke run (`--quick`: small sizes, figures are indicative only)" if quick else "full run"
    lines = [
        "# celery-flow benchmark results",
        "",
        f"Generated by `make bench` (`python bench/run_all.py{' --quick' if quick else ''}`) "
        f"on {now}: {mode}, "
        f"{total / 60:.1f} minutes in all.",
        "",
        f"Machine: {_machine()}.",
        "",
        "Every figure is printed next to its baseline, measured in the same run on the same machine; the "
        "scripts run one after another, never in parallel. Re-run `make bench` to refresh this file.",
        "",
        "| benchmark | status | seconds |",
        "|---|---|---:|",
    ]
    for bench, status, _, elapsed in results:
        lines.append(f"| [{bench.title}](#{bench.name}) | {status} | {elapsed:.0f} |")
    for bench, status, output, elapsed in results:
        lines += [
            "",
            f'<a id="{bench.name}"></a>',
            f"## {bench.title}",
            "",
            f"{bench.what}",
            "",
            f"`bench/{bench.script}` — {status}, {elapsed:.0f} s.",
            "",
            "```",
            output.strip() or "(no output)",
            "```",
        ]
    return "\n".join(lines) + "\n"


#: The hand-written section that starts here and runs to the end of RESULTS.md survives a rewrite.
KEPT_ANCHOR = '<a id="design"></a>'


def kept_section(path: Path) -> str:
    """The current file's hand-written section (KEPT_ANCHOR to the end), or "" when it has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    at = text.find(KEPT_ANCHOR)
    return "\n" + text[at:] if at >= 0 else ""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every benchmark")
    parser.add_argument(
        "--only", default="", help="comma-separated names: " + ",".join(b.name for b in BENCHES)
    )
    parser.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    args = parser.parse_args()
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = []
    start = time.monotonic()
    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        status, output, elapsed = run_one(bench, args.quick)
        print(output, flush=True)
        print(f"<== {bench.name}: {status} in {elapsed:.0f} s\n", flush=True)
        results.append((bench, status, output, elapsed))
    total = time.monotonic() - start
    output = Path(args.output)
    output.write_text(render(results, args.quick, total) + kept_section(output), encoding="utf-8")
    print(f"wrote {args.output} ({total / 60:.1f} min)")
    return 0 if all(status in {"ok", "missing"} for _, status, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
