"""Build a store with a released celery-flow's own code: run with PYTHONPATH at that release's source.

    python tests/support/release_builder.py BROKER_URL PREFIX ANSWERS_JSON STORE_URL [STORE_URL ...]

A real Celery worker (solo pool, in a thread) runs chains, groups, chords, a failure with an errback, a
retry, an ETA task, a task spawning children and a traced call, tracked by that release's `init()`; the
release's own Consumer folds the events into each store (one consumer group per store, so each gets
every event); then the release's own server answers the API paths the migration test compares, saved
to ANSWERS_JSON as {store URL: {path: JSON body}}.

Uses only the public API every release has, and nothing from the current tests: `import celery_flow`
must be the release's code.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from celery import Celery, Task, chain, chord, group
from celery.contrib.testing.worker import start_worker

import celery_flow
from celery_flow.consumer import Consumer
from celery_flow.server.app import create_app
from celery_flow.store import TaskFilter, open_store

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED"}


def make_app(broker: str, queue: str) -> Celery:
    app = Celery("release_store", broker=broker, backend=broker, set_as_current=False)
    app.conf.update(task_default_queue=queue, worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=True, result_expires=600)  # fmt: skip

    @app.task(shared=False, name="r.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(shared=False, name="r.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @app.task(shared=False, name="r.xsum")
    def xsum(numbers: list[int]) -> int:
        return sum(numbers)

    @app.task(shared=False, name="r.fail")
    def fail(message: str) -> None:
        raise ValueError(message)

    @app.task(shared=False, name="r.errback")
    def errback(task_id: str) -> str:
        return f"handled {task_id}"

    @app.task(shared=False, name="r.flaky", bind=True, max_retries=3)
    def flaky(self: Task) -> int:
        if self.request.retries < 1:
            raise self.retry(exc=RuntimeError("first attempt fails"), countdown=0.2)
        return int(self.request.retries)

    @app.task(shared=False, name="r.spawn")
    def spawn(n: int) -> list[str]:
        return [add.delay(i, i).id for i in range(n)]

    return app


def run_workflows(app: Celery) -> None:
    t = app.tasks
    waits: list[Any] = [
        chain(t["r.add"].s(2, 2), t["r.mul"].s(3), t["r.add"].s(1)).apply_async(),
        group(t["r.add"].s(i, i) for i in range(3)).apply_async(),
        chord([t["r.add"].s(i, 1) for i in range(3)], t["r.xsum"].s()).apply_async(),
        chain(t["r.add"].s(1, 1), group(t["r.mul"].s(2), t["r.mul"].s(3)), t["r.xsum"].s()).apply_async(),
        t["r.fail"].apply_async(("nope",), link_error=t["r.errback"].s()),
        t["r.flaky"].apply_async(),
        t["r.add"].apply_async((5, 5), countdown=1.5),
    ]
    with celery_flow.trace():
        waits.append(t["r.add"].delay(7, 7))
    children = t["r.spawn"].delay(2).get(timeout=60)
    waits += [app.AsyncResult(child) for child in children]
    for result in waits:
        result.get(timeout=60, propagate=False)


def fold(broker: str, prefix: str, url: str, group_name: str) -> None:
    """The release's consumer folds every event into `url`, until nothing is left in flight."""
    store = open_store(url)
    stop = threading.Event()
    consumer = Consumer(broker, store, prefix=prefix, group=group_name, name="builder", read_timeout=0.2)
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        last, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            events = store.stats().events
            tasks = store.list_tasks(TaskFilter(), 500, None).items
            if events != last:
                last, stable_since = events, time.monotonic()
            elif (
                tasks
                and all(task.state in TERMINAL for task in tasks)
                and time.monotonic() - stable_since > 2
            ):
                return
        raise SystemExit(f"the events never settled in {url}: {last} events")
    finally:
        stop.set()
        thread.join(15)
        store.close()


def answers(url: str) -> dict[str, Any]:
    """What the release's server answers on the paths the migration test compares."""
    from fastapi.testclient import TestClient

    out: dict[str, Any] = {}
    with TestClient(create_app(store=url, embedded_consumer=False)) as client:

        def get(path: str) -> Any:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text)
            out[path] = response.json()
            return out[path]

        flows = get("/api/flows?limit=500")["items"]
        tasks = get("/api/tasks?limit=500")["items"]
        get("/api/registry")
        get("/api/flows?limit=500&state=FAILURE")
        get("/api/tasks?limit=500&name=r.add")
        for flow in flows:
            get(f"/api/flows/{flow['root_id']}")
        for task in tasks:
            get(f"/api/tasks/{task['task_id']}")
        for trace_id in sorted({task["trace_id"] for task in tasks if task["trace_id"]}):
            get(f"/api/traces/{trace_id}")
    return out


def main(argv: list[str]) -> None:
    broker, prefix, answers_path, *urls = argv
    app = make_app(broker, f"q_{prefix}")
    celery_flow.init(app, transport_url=broker, prefix=prefix)
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="ERROR",
                          shutdown_timeout=10):  # fmt: skip
            run_workflows(app)
    finally:
        celery_flow.shutdown(app)
    for i, url in enumerate(urls):
        fold(broker, prefix, url, f"builder{i}")
    with open(answers_path, "w") as out:
        json.dump({url: answers(url) for url in urls}, out)


if __name__ == "__main__":
    main(sys.argv[1:])
