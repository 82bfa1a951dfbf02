"""The re-fold a migration leaves behind, on both engines: right with a consumer writing meanwhile,
resumable, repairing flows and counts when a fold rule changed, visible in /api/health."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.events import event
from tests.support.server_helpers import serving
from tests.support.wait import wait_for

from celery_flow.events import Event
from celery_flow.server.app import create_app
from celery_flow.store import TaskFilter, open_store
from celery_flow.store.backfill import progress, refold_batch, run
from celery_flow.store.migrations import MigrateMode, schedule_refold
from celery_flow.store.schema import SCHEMA_VERSION
from celery_flow.store.sql import SqlStore

T0 = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def store_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty stores of one engine: the one under test and a reference."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
        return
    import psycopg

    pg_url = str(request.getfixturevalue("pg_url"))
    schemas = [f"r_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"CREATE SCHEMA {schema}")
    try:
        a, b = (f"{pg_url}?options=-csearch_path%3D{schema}" for schema in schemas)
        yield a, b
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def opened(url: str, migrate: MigrateMode = "foreground") -> SqlStore[Any]:
    store = open_store(url, migrate=migrate)
    assert isinstance(store, SqlStore)
    return store


def flow_events(k: int) -> tuple[list[Event], list[Event]]:
    """A root and two children: (sent, received, started of each) and (their finishing events)."""
    root = f"root-{k}"
    t = T0 + k
    begun: list[Event] = []
    finished: list[Event] = []
    for i, task_id in enumerate((root, f"{root}-a", f"{root}-b")):
        name = "app.root" if i == 0 else f"app.child{i}"
        common: dict[str, Any] = {"name": name, "root_id": root, "parent_id": root if i else None}
        host = {"hostname": f"celery@w{k % 3}"}
        begun += [
            event("sent", task_id, t + i, queue="celery", **common),
            event("received", task_id, t + i + 0.5, **common, **host),
            event("started", task_id, t + i + 0.75 + 0.01 * (k % 7), **common, **host),
        ]
        outcome = "failed" if k % 5 == 0 and i == 2 else "succeeded"
        finished.append(event(outcome, task_id, t + i + 2, runtime=1.0, **common, **host))
    return begun, finished


def as_dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]


def everything(store: SqlStore[Any]) -> dict[str, Any]:
    """Every task, flow and registry row the API would serve, in list order."""

    def pages(fetch: Any) -> list[Any]:
        out, cursor = [], None
        while True:
            page = fetch(TaskFilter(), 500, cursor)
            out += as_dicts(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return out

    registry = [{k: v for k, v in r.items() if k != "workers"} for r in as_dicts(store.registry())]
    workers = [(w.hostname, w.tasks_run) for w in store.workers()]
    return {"tasks": pages(store.list_tasks), "flows": pages(store.list_flows), "registry": registry,
            "workers": workers}  # fmt: skip


def stale(store: SqlStore[Any]) -> None:
    """Leave the store as an older version's fold left it: no queue_wait, a re-fold pending."""

    def older_fold(s: Any, _seq: int) -> None:
        s.run("UPDATE tasks SET queue_wait = NULL")
        schedule_refold(s)

    store._writing(older_fold)


def test_refold_with_a_consumer_writing_meanwhile_leaves_every_task_as_its_events_say(
    store_urls: tuple[str, str],
) -> None:
    url, reference_url = store_urls
    store, reference = opened(url), opened(reference_url)
    flows = [flow_events(k) for k in range(400)]
    try:
        for start in range(0, 300, 20):
            store.apply([e for begun, _ in flows[start : start + 20] for e in begun])
        stale(store)
        assert store.list_tasks(TaskFilter(), 1, None).items[0].queue_wait is None
        # Meanwhile: the old tasks finish, and new flows arrive, some finishing in the same batch.
        later = [e for _, finished in flows[:300] for e in finished]
        later += [e for begun, finished in flows[300:] for e in begun + finished]
        batches = [later[i : i + 60] for i in range(0, len(later), 60)]
        refolder = threading.Thread(target=run, args=(store,), kwargs={"limit": 25})
        refolder.start()
        for batch in batches:
            store.apply(batch)
        refolder.join(120)
        assert not refolder.is_alive()
        assert progress(store) is None
        reference.apply([e for begun, finished in flows for e in begun + finished])
        got, want = everything(store), everything(reference)
        assert len(got["tasks"]) == 1200
        assert all(task["queue_wait"] is not None for task in got["tasks"])
        assert got == want
    finally:
        store.close()
        reference.close()


def test_refold_resumes_after_a_stop_and_folds_each_task_once(store_urls: tuple[str, str]) -> None:
    url, _ = store_urls
    store = opened(url)
    store.apply([e for k in range(100) for part in flow_events(k) for e in part])
    stale(store)
    for _ in range(3):
        batch = refold_batch(store, 40)
        assert batch is not None
        assert batch.count == 40
    store.close()

    store = opened(url)  # another process, later: resumes after the cursor
    try:
        status = progress(store)
        assert status is not None
        assert (status.done, status.remaining) == (120, 180)
        assert run(store, limit=40) == 180
        assert progress(store) is None
        assert all(task.queue_wait is not None for task in store.list_tasks(TaskFilter(), 500, None).items)
    finally:
        store.close()


def test_refold_of_a_changed_fold_rule_moves_flow_name_and_worker_counts(store_urls: tuple[str, str]) -> None:
    """Rows an older rule folded to another state (here: succeeded tasks left STARTED, with their
    counts): the re-fold derives them again from the events, counts included."""
    url, reference_url = store_urls
    store, reference = opened(url), opened(reference_url)
    events = [e for k in range(50) for part in flow_events(k) for e in part]
    try:
        store.apply(events)
        reference.apply(events)
        roots = [f"root-{k}" for k in range(0, 50, 2)]

        def older_rule(s: Any, _seq: int) -> None:
            marks = ", ".join("?" for _ in roots)
            s.run(f"UPDATE tasks SET state = 'STARTED', finished_at = NULL WHERE task_id IN ({marks})", roots)
            s.run(f"UPDATE flows SET n_success = n_success - 1, n_started = n_started + 1, state = 'RUNNING' "
                  f"WHERE root_id IN ({marks})", roots)  # fmt: skip
            s.run("UPDATE name_stats SET n_success = n_success - ?, n_started = n_started + ? "
                  "WHERE name = 'app.root'", (len(roots), len(roots)))  # fmt: skip
            for host in range(3):  # a STARTED task has not run yet
                ran = sum(1 for k in range(0, 50, 2) if k % 3 == host)
                s.run(
                    "UPDATE workers SET tasks_run = tasks_run - ? WHERE hostname = ?",
                    (ran, f"celery@w{host}"),
                )
            schedule_refold(s)

        store._writing(older_rule)
        assert everything(store) != everything(reference)
        run(store, limit=30)
        assert everything(store) == everything(reference)
    finally:
        store.close()
        reference.close()


def test_health_shows_the_refold_while_it_runs_and_the_schema_after(store_urls: tuple[str, str]) -> None:
    url, _ = store_urls
    store = opened(url)
    store.apply([e for k in range(60) for part in flow_events(k) for e in part])
    stale(store)
    try:
        with (
            serving(create_app(store=store, embedded_consumer=False)) as base,
            httpx.Client(base_url=base) as client,
        ):
            health = client.get("/api/health").json()["store"]
            assert health["schema"] == SCHEMA_VERSION
            refold = health["refold"]
            assert (refold["schema"], refold["done"], refold["remaining"], refold["percent"]) == (
                SCHEMA_VERSION,
                0,
                180,
                0.0,
            )
            assert refold_batch(store, 90) is not None

            def halfway() -> dict[str, Any] | None:
                now = client.get("/api/health").json()["store"]["refold"]
                return now if now["done"] == 90 else None

            assert wait_for(halfway, 10, "health to show the batch")["percent"] == 50.0
            run(store)
            wait_for(
                lambda: client.get("/api/health").json()["store"]["refold"] is None, 10, "the re-fold end"
            )
    finally:
        store.close()
