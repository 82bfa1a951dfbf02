"""Migrating a big store while serving it: backfill duration and /api/flows latency during it vs after.

1. Builds a schema-2 store with the code of release 77b421b itself (`git archive` into a temporary
   directory, run with PYTHONPATH there and this venv's dependencies): synthetic flows of 8 tasks from
   bench/_common.py folded by that release's `store.apply()` in large batches. The built file is kept
   (`--keep`, default /tmp/celery-flow-bench/migrate-v2-<tasks>.db) and copied for each run.
2. Starts the current `celery-flow server --no-consumer` on the copy: it migrates the schema at open
   (under the lock) and re-folds every task in the background.
3. Requests `/api/flows?limit=50` (the landing page, walking a few pages) back to back from this
   process until `/api/health` says the re-fold finished, then as many again (5,000 at most); prints
   the open time, the re-fold's duration and pace, and latency percentiles during vs after.

    python bench/migrate.py                     # 1,000,000 tasks (building takes several minutes once)
    python bench/migrate.py --tasks 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RELEASE = "77b421b"
sys.path.insert(0, str(HERE))


def build_with_release(path: Path, tasks: int) -> None:
    """Run this file with `--build` under the release's code: it fills `path` with `tasks` tasks."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", RELEASE, "src/celery_flow"],
            capture_output=True,
        )
        if archive.returncode != 0:
            sys.exit(
                f"release commit {RELEASE} is not in this clone: `git fetch --unshallow`, then run again"
            )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([f"{tmp}/src", str(HERE)])}
        subprocess.run([sys.executable, __file__, "--build", str(path), "--tasks", str(tasks)], env=env,
                       cwd=tmp, check=True)  # fmt: skip


def build(path: Path, tasks: int) -> None:
    """(Run under the release's code.) Fold synthetic flows into a new store at `path`."""
    from _common import TASKS_PER_FLOW, batches, stream
    from celery_flow.store import open_store

    store = open_store(f"sqlite:///{path}")
    flows = tasks // TASKS_PER_FLOW
    rate = max(flows / 86_400, 1.0)  # a day of a busy deployment
    t0 = time.time() - flows / rate - 600
    chunk, applied, began = 2000, 0, time.perf_counter()
    try:
        for n in range(0, flows, chunk):
            events = stream(min(chunk, flows - n), seed=n + 11, rate=rate, t0=t0 + n / rate)
            for part in batches(events, 4000):
                store.apply(part)
            applied += len(events)
            print(f"\r  {min(tasks, (n + chunk) * TASKS_PER_FLOW):,} tasks, {applied:,} events, "
                  f"{applied / (time.perf_counter() - began):,.0f} events/s", end="", flush=True)  # fmt: skip
        print()
    finally:
        store.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def measure(db: Path, log: Path) -> None:
    import httpx

    sys.path.insert(0, str(REPO / "tests" / "support"))
    from server_helpers import free_port  # type: ignore[import-not-found]

    port = free_port()
    cli = str(Path(sys.executable).with_name("celery-flow"))
    started = time.monotonic()
    with open(log, "wb") as out:
        args = ["server", "--no-consumer", "--store", f"sqlite:///{db}", "--port", str(port)]
        server = subprocess.Popen([cli, *args, "--log-level", "info"], stdout=out, stderr=subprocess.STDOUT)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        while True:
            try:
                health = client.get("/api/health").json()
                break
            except httpx.HTTPError:
                if server.poll() is not None:
                    sys.exit(f"the server exited: see {log}")
                time.sleep(0.05)
        opened = time.monotonic() - started
        print(f"server answering after {opened:.1f} s (schema steps at open, under the lock)")
        during: list[float] = []
        after: list[float] = []
        refold_began, cpu_began = time.monotonic(), cpu_seconds(server.pid)
        next_health, progress = 0.0, health["store"]["refold"]
        cursor: str | None = None
        while progress is not None:
            t = time.perf_counter()
            page = client.get("/api/flows", params={"limit": 50, **({"cursor": cursor} if cursor else {})})
            during.append((time.perf_counter() - t) * 1000)
            cursor = page.json()["next_cursor"] if len(during) % 5 else None  # the first five pages
            if time.monotonic() >= next_health:
                next_health = time.monotonic() + 2.0
                progress = client.get("/api/health").json()["store"]["refold"]
                if progress is not None:
                    pace = progress["tasks_per_second"] or 0
                    done, percent = progress["done"], progress["percent"]
                    line = f"re-fold: {done:,} done, {percent:.0f}%, {pace:,.0f} tasks/s"
                    print(f"\r  {line}", end="", flush=True)
        refold_s, refold_cpu = time.monotonic() - refold_began, cpu_seconds(server.pid) - cpu_began
        print()
        for _ in range(min(max(len(during), 500), 5000)):
            t = time.perf_counter()
            page = client.get("/api/flows", params={"limit": 50, **({"cursor": cursor} if cursor else {})})
            after.append((time.perf_counter() - t) * 1000)
            cursor = page.json()["next_cursor"] if len(after) % 5 else None
        stats = client.get("/api/health").json()["store"]
    finally:
        server.terminate()
        server.wait(30)
    finished = [line for line in log.read_text().splitlines() if "re-fold for store schema" in line]
    print(
        f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    print(f"store: {stats['tasks']:,} tasks, {stats['events']:,} events, schema {stats['schema']}")
    print(
        f"re-fold: about {refold_s:.0f} s after the server answered, {stats['tasks'] / refold_s:,.0f} "
        "tasks/s; "
        f"server CPU meanwhile {refold_cpu:.0f} s (requests included)"
    )
    if finished:
        print(f"server log: {finished[-1].split(': ', 1)[-1]}")
    print()
    print("/api/flows?limit=50            requests   p50 ms   p95 ms   p99 ms   max ms")
    for label, lat in (("during the re-fold", during), ("after", after)):
        print(f"{label:<30} {len(lat):>8} {statistics.median(lat):>8.1f} {percentile(lat, 0.95):>8.1f} "
              f"{percentile(lat, 0.99):>8.1f} {max(lat):>8.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="Where the built schema-2 store is kept.")
    parser.add_argument("--build", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build is not None:
        build(args.build, args.tasks)
        return
    keep = args.keep or Path(f"/tmp/celery-flow-bench/migrate-v2-{args.tasks}.db")
    keep.parent.mkdir(parents=True, exist_ok=True)
    if not keep.exists():
        print(f"building a schema-2 store of {args.tasks:,} tasks with release {RELEASE}'s code: {keep}")
        began = time.monotonic()
        build_with_release(keep.with_suffix(".part"), args.tasks)
        os.replace(keep.with_suffix(".part"), keep)
        print(f"built in {time.monotonic() - began:.0f} s")
    work = keep.with_name(keep.stem + "-run.db")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(keep, work)
    measure(work, work.with_suffix(".log"))


if __name__ == "__main__":
    main()
