"""Flows of any size: the graph of a 10-, 10,000-, 100,000- and 500,000-task chord, served collapsed.

One SQLite store holds four flows (root -> chord of N - 2 members -> callback, tests/support/bigflow.py),
written with `store.apply`. A real `celery-flow server --no-consumer` process serves them; per flow:

- `GET /api/flows/{root_id}` response time (median of 5, after one warm-up) and size;
- the server's RSS (VmRSS) before the first graph request and after every flow's graphs were served;
- time to first node in headless Chromium: navigation until the first task node is on screen.

Goal (issue 20): the 100,000-task flow within 2 x the 10-task flow's response time + 200 ms, RSS growth
under 50 MB. Last, for comparison, the 10,000-task flow uncollapsed (`?collapse=1000000`), as every
flow was served before. Run: `.venv/bin/python bench/bigflow.py [--sizes 10,10000,100000,500000]`.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.bigflow import big_chord  # noqa: E402
from tests.support.server_helpers import cli_env, free_port, start_cli, stop_process  # noqa: E402

from celery_flow.store import open_store  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUNS = 5


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fill(store_url: str, sizes: list[int]) -> dict[int, str]:
    """Write one chord of each size (members = size - 2); return root ids by size."""
    store = open_store(store_url)
    roots: dict[int, str] = {}
    try:
        for size in sizes:
            chord = big_chord(max(1, size - 2), fail_every=1000, t0=time.time() - 3600)
            started = time.perf_counter()
            events = chord.events()
            while batch := list(itertools.islice(events, 2000)):
                store.apply(batch)
            roots[size] = chord.root_id
            print(f"  wrote {size:>9,}-task flow in {time.perf_counter() - started:6.1f} s", flush=True)
    finally:
        store.close()
    return roots


def timed_get(client: httpx.Client, path: str, **params: object) -> tuple[float, int]:
    client.get(path, params=params).raise_for_status()  # warm-up
    times, size = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        response = client.get(path, params=params)
        times.append(time.perf_counter() - started)
        response.raise_for_status()
        size = len(response.content)
    return statistics.median(times), size


def first_node(url: str, roots: dict[int, str]) -> dict[int, float]:
    from playwright.sync_api import sync_playwright

    out: dict[int, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for size, root in roots.items():
                context = browser.new_context(viewport={"width": 1440, "height": 900})
                page = context.new_page()
                started = time.perf_counter()
                page.goto(f"{url}/flows/{root}")
                page.locator('[data-testid^="node-"]').first.wait_for(state="visible", timeout=120_000)
                out[size] = time.perf_counter() - started
                context.close()
        finally:
            browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,10000,100000,500000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'big.db'}"
        print(f"writing {len(sizes)} flows into {store_url}", flush=True)
        roots = fill(store_url, sizes)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = Path(tmp) / "server.log"
        server = start_cli("server", "--no-consumer", "--store", store_url, "--port", str(port),
                           "--log-level", "warning", env=cli_env(CELERY_FLOW_TTL="0"), log=log)  # fmt: skip
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.get("/api/health").raise_for_status()
                        break
                    except httpx.HTTPError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(log.read_text()) from None
                        time.sleep(0.2)
                rss_before = rss_mb(server.pid)
                rows = []
                for size, root in roots.items():
                    seconds, body = timed_get(client, f"/api/flows/{root}")
                    rows.append((size, seconds, body, rss_mb(server.pid)))
                rss_after = rss_mb(server.pid)
                browser = first_node(url, roots)
                old_seconds, old_body = (None, None)
                if 10_000 in roots:
                    old = f"/api/flows/{roots[10_000]}"
                    old_seconds, old_body = timed_get(client, old, collapse=1_000_000)
        finally:
            stop_process(server)
    print()
    print("GET /api/flows/{root_id} (collapse=200, the default), SQLite, median of 5")
    print(f"{'tasks':>9}  {'response':>9}  {'size':>11}  {'RSS after':>9}  {'first node':>10}")
    for size, seconds, body, rss in rows:
        print(f"{size:>9,}  {seconds * 1000:7.1f} ms  {body:>9,} B  {rss:6.0f} MB  {browser[size]:8.2f} s")
    print(f"server RSS before the first graph {rss_before:.0f} MB, after all {rss_after:.0f} MB "
          f"(+{rss_after - rss_before:.0f} MB)")  # fmt: skip
    by_size = {size: seconds for size, seconds, _, _ in rows}
    if 10 in by_size and 100_000 in by_size:
        goal = 2 * by_size[10] + 0.2
        verdict = "met" if by_size[100_000] <= goal else "MISSED"
        print(f"goal: 100,000 tasks in <= 2 x {by_size[10] * 1000:.1f} ms + 200 ms = {goal * 1000:.0f} ms: "
              f"{by_size[100_000] * 1000:.0f} ms, {verdict}; RSS growth under 50 MB: "
              f"{'met' if rss_after - rss_before < 50 else 'MISSED'}")  # fmt: skip
    if old_seconds is not None and old_body is not None:
        print(f"for comparison, 10,000 tasks uncollapsed (?collapse=1000000): {old_seconds * 1000:.0f} ms, "
              f"{old_body:,} B")  # fmt: skip


if __name__ == "__main__":
    main()
