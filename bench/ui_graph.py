"""How fast the UI makes a 2,000-task flow usable: time until the graph is drawn and a node clickable.

Two synthetic 2,000-task flows are written straight into a SQLite store (`open_store(...).apply`) and
served by the real server (`create_app`, no consumer); headless Chromium opens each flow's deep link:

- `canvas`: root -> chord of 1,970 header tasks -> callback -> chain of 28 tasks. The fan-out is
  collapsed into one "x1970" node (expandable), so ~32 nodes are laid out and drawn.
- `tree`: a 2,000-task tree with fan-outs of at most 12 (nothing collapses): every node is laid out
  by ELK (in a Web Worker) and drawn by React Flow (viewport culling on).

Printed per shape (median of 3 cold page loads, fresh browser context each): navigation -> graph ready
(layout done, nodes on screen), and click on a node -> its detail panel shown. Needs the built UI
(`make ui`). Run: `.venv/bin/python bench/ui_graph.py`.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.server_helpers import ServerThread  # noqa: E402

from celery_flow.events import Event  # noqa: E402
from celery_flow.server import create_app  # noqa: E402
from celery_flow.store import open_store  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RUNS = 3


def _task(task_id: str, name: str, root: str, parent: str | None, t: float, **lineage: Any) -> list[Event]:
    def ev(type_: str, ts: float, **fields: Any) -> Event:
        return Event(v=1, id=uuid.uuid4().hex, type=type_, ts=ts, task_id=task_id, name=name, root_id=root,  # type: ignore[arg-type]
                     parent_id=parent, retries=0, **fields)  # fmt: skip

    host = {"hostname": "celery@bench", "pid": 100}
    return [
        ev("sent", t, queue="celery", args=[1, 2], kwargs={}, **lineage),
        ev("received", t + 0.01, **host),
        ev("started", t + 0.02, **host),
        ev("succeeded", t + 0.05, runtime=0.03, result=3, **host),
    ]


def canvas_flow(t0: float) -> tuple[str, list[Event]]:
    root = uuid.uuid4().hex
    callback = uuid.uuid4().hex
    group = uuid.uuid4().hex
    events = _task(root, "bench.start", root, None, t0)
    for i in range(1970):
        events += _task(uuid.uuid4().hex, "bench.fetch", root, root, t0 + 0.1 + i * 0.001, group_id=group,
                        chord_id=callback)  # fmt: skip
    chain = [uuid.uuid4().hex for _ in range(28)]
    events += _task(callback, "bench.merge", root, root, t0 + 3, links=chain[:1])
    for i, task_id in enumerate(chain):
        nxt = chain[i + 1 : i + 2]
        events += _task(task_id, f"bench.step{i % 4}", root, callback if i == 0 else chain[i - 1],
                        t0 + 3.1 + i * 0.1, links=nxt)  # fmt: skip
    return root, events


def tree_flow(t0: float) -> tuple[str, list[Event]]:
    root = uuid.uuid4().hex
    events = _task(root, "bench.crawl", root, None, t0)
    frontier = [root]
    count = 1
    depth = 0
    while count < 2000:
        depth += 1
        nxt = []
        for parent in frontier:
            for _ in range(12):
                if count >= 2000:
                    break
                task_id = uuid.uuid4().hex
                events += _task(
                    task_id, f"bench.level{depth}", root, parent, t0 + depth * 0.2 + count * 0.0005
                )
                nxt.append(task_id)
                count += 1
        frontier = nxt
    return root, events


def measure(url: str, root: str) -> tuple[float, float, int, float | None]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1440, "height": 900})
            page = ctx.new_page()
            start = time.perf_counter()
            page.goto(f"{url}/flows/{root}")
            graph = page.locator('[data-testid="graph"][data-ready="true"]')
            expect(graph).to_be_visible(timeout=60_000)
            expect(page.locator(".tnode").first).to_be_attached(timeout=60_000)
            ready = time.perf_counter() - start
            # Click a task node that is on screen (the view fits the graph; culled nodes are not in the DOM).
            test_id = page.evaluate(
                """() => {
                  const box = document.querySelector('[data-testid="graph"]').getBoundingClientRect();
                  for (const el of document.querySelectorAll('.tnode[data-task-id]')) {
                    const r = el.getBoundingClientRect();
                    const inside = r.left >= box.left && r.right <= box.right;
                    if (inside && r.top >= box.top && r.bottom <= box.bottom) return el.dataset.testid;
                  }
                  return null;
                }"""
            )
            assert test_id, "no task node on screen"
            first = page.get_by_test_id(test_id)
            drawn = int(graph.get_attribute("data-nodes") or 0)
            click = time.perf_counter()
            first.click()
            expect(page.get_by_test_id("task-detail")).to_be_visible(timeout=30_000)
            panel = time.perf_counter() - click
            # Expanding a collapsed node (canvas: the 1,970-task header, 100 drawn) re-lays the graph out.
            expand = None
            cluster = page.locator('[data-testid^="cluster-"]').first
            if cluster.count():
                layouts = int(graph.get_attribute("data-layouts") or 0)
                clicked = time.perf_counter()
                cluster.click()
                done = page.locator(f'[data-testid="graph"][data-ready="true"][data-layouts="{layouts + 1}"]')
                expect(done).to_be_attached(timeout=60_000)
                expand = time.perf_counter() - clicked
            ctx.close()
        finally:
            browser.close()
    return ready, panel, drawn, expand


def main() -> None:
    static = REPO / "src" / "celery_flow" / "web" / "static" / "index.html"
    if not static.exists():
        sys.exit("the UI is not built: run `make ui` first")
    with tempfile.TemporaryDirectory() as tmp:
        store_url = f"sqlite:///{tmp}/bench.db"
        store = open_store(store_url)
        shapes = {}
        t0 = time.time() - 3600
        for name, make in (("canvas", canvas_flow), ("tree", tree_flow)):
            root, events = make(t0)
            for i in range(0, len(events), 500):
                store.apply(events[i : i + 500])
            shapes[name] = root
        store.close()
        server = ServerThread(create_app(store=store_url, embedded_consumer=False))
        server.start()
        try:
            print(f"UI: 2,000-task flow in headless Chromium, median of {RUNS} cold loads")
            for name, root in shapes.items():
                results = [measure(server.url, root) for _ in range(RUNS)]
                ready = statistics.median(r[0] for r in results)
                panel = statistics.median(r[1] for r in results)
                drawn = results[0][2]
                expands = [r[3] for r in results if r[3] is not None]
                extra = f", expand a collapsed node {statistics.median(expands):5.2f} s" if expands else ""
                print(f"  {name:7s} 2,000 tasks, {drawn:5d} drawn nodes: graph ready {ready:5.2f} s, "
                      f"node click -> detail {panel * 1000:5.0f} ms{extra}")  # fmt: skip
        finally:
            server.stop()


if __name__ == "__main__":
    main()
