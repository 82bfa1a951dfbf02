# ruff: noqa: F811 - pytest fixtures imported from other modules are parameters of the tests here
"""`q` finds tasks and flows by what is inside their arguments, results and errors: real worker, real
broker, real HTTP, on SQLite and PostgreSQL, over Redis Streams and RabbitMQ (the `env` of
test_flow_graphs.py). Each test tags its tasks with a value of its own, since the store is shared by
the module.

The index is written behind the fold (store/search.py's indexer, run by the server's consumer every
second): `found` first waits until /api/health says the index caught up after the tasks were stored.
The store-level tests at the end check what the index itself does: the indexer makes a stored task
findable and brings the lag to 0, retention deletes the entries of deleted tasks, and a store migrated
to schema 4 (an empty index) is filled from the stored events.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from celery import chain
from tests.integration.test_flow_graphs import Env, env  # noqa: F401 - the shared worker fixture
from tests.integration.test_store import store, store_url  # noqa: F401 - a store of each engine
from tests.support.events import event
from tests.support.wait import wait_for, wait_indexed

from celery_flow.store import TaskFilter, open_store, search
from celery_flow.store.sql import SqlStore

pytestmark = pytest.mark.slow


def tag() -> int:
    """A number no other task in the store carries."""
    return int(uuid.uuid4().int % 10**12) + 10**12


# When stored() last saw its task, and the time of the health report that last found the index caught up.
_stored_at = [0.0]
_indexed_at = [0.0]


def stored(env: Env, task_id: str, state: str = "SUCCESS") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        resp = env.api.get(f"/api/tasks/{task_id}")
        return resp.json() if resp.status_code == 200 and resp.json()["state"] == state else None

    detail = wait_for(ready, 30, f"task {task_id} stored as {state}")
    saw_stored()
    return detail


def saw_stored() -> None:
    """Note that the tasks searched next are stored by now: `found` waits until they are indexed."""
    _stored_at[0] = time.time()


def indexed(env: Env) -> None:
    """Wait until a health report made after stored() last returned shows a search lag of 0."""
    if _indexed_at[0] <= _stored_at[0]:
        _indexed_at[0] = wait_indexed(lambda: env.api.get("/api/health").json(), _stored_at[0])


def found(env: Env, q: str, path: str = "/api/tasks", **params: Any) -> list[str]:
    indexed(env)
    resp = env.api.get(path, params={"q": q, "limit": 200, **params})
    assert resp.status_code == 200, resp.text
    key = "task_id" if path == "/api/tasks" else "root_id"
    return [item[key] for item in resp.json()["items"]]


def test_q_finds_a_task_by_a_kwarg_value_and_by_key_value_at_any_depth(env: Env) -> None:
    n = tag()
    kwargs = {
        "customer_id": n,
        "email": f"ada{n}@example.com",
        "order": {"shipping": {"city": "New York", "zip": f"Z{n}"}, "items": [{"sku": f"SKU-{n}", "qty": 2}]},
    }
    task = env.task("echo").delay(**kwargs)
    other = env.task("echo").delay(customer_id=n + 1, email=f"ada{n}@example.org")
    stored(env, task.id)
    stored(env, other.id)

    assert found(env, str(n)) == [task.id]
    assert found(env, f"ada{n}@example.com") == [task.id]
    assert sorted(found(env, f"ada{n}")) == sorted([task.id, other.id])
    assert found(env, f"customer_id:{n}") == [task.id]
    assert found(env, f"CUSTOMER_ID:{n}") == [task.id]
    assert found(env, f'city:"new york" customer_id:{n}') == [task.id]  # a nested dict
    assert found(env, f"sku:sku-{n}") == [task.id]  # a dict inside a list
    assert found(env, f"zip:Z{n}") == [task.id]
    assert found(env, f"customer_id:{n} ada{n}") == [task.id]  # words and pairs: all must match
    assert found(env, f"customer_id:{n + 2}") == []
    assert found(env, f"email:{n}") == []
    assert found(env, f'city:"new" customer_id:{n}') == []  # a value matches as a whole
    # Combined with the other filters.
    assert sorted(found(env, f"ada{n}", state="SUCCESS", name="t.echo")) == sorted([task.id, other.id])
    assert found(env, f"ada{n}", state="FAILURE") == []
    assert found(env, f"ada{n}", since=time.time() + 3600) == []
    assert found(env, f"null {n}") == []
    nulled = env.task("echo").delay(coupon=None, note=f"null {n}")
    stored(env, nulled.id)
    assert found(env, f"null {n}") == [nulled.id]
    assert found(env, f"coupon:null {n}") == [nulled.id]


def test_q_finds_a_task_by_a_word_of_its_result_and_of_its_exception(env: Env) -> None:
    n = tag()
    added = env.task("add").delay(n, 7)
    assert added.get(timeout=20) == n + 7
    failed = env.task("fail").delay(msg=f"card {n} declined")
    calm = env.task("echo").delay(note=f"card {n} declined")
    stored(env, added.id)
    stored(env, failed.id, "FAILURE")
    stored(env, calm.id)

    assert found(env, str(n + 7)) == [added.id]  # only in its result
    assert sorted(found(env, f"declined {n}")) == sorted([failed.id, calm.id])
    assert found(env, f"valueerror {n}") == [failed.id]  # the exception's words, with its kwargs'
    assert found(env, f"valueerror {n}", state="FAILURE") == [failed.id]


def test_a_scrubbed_secret_is_never_found(env: Env) -> None:
    n = tag()
    task = env.task("echo").delay(
        user=f"u{n}", password=f"hunter{n}", api_key=f"sk{n}", nested={"token": f"tk{n}"}
    )
    detail = stored(env, task.id)
    assert detail["kwargs"]["password"] == search.FILTERED  # the library scrubbed it before it left

    assert found(env, f"u{n}") == [task.id]
    for q in (
        f"hunter{n}",
        f"sk{n}",
        f"tk{n}",
        f"password:hunter{n}",
        "Filtered",
        f"password:{search.FILTERED}",
    ):
        assert found(env, q) == [], q
        assert found(env, q, "/api/flows") == [], q


def test_a_word_that_matches_nothing_finds_nothing(env: Env) -> None:
    assert found(env, f"nothing{uuid.uuid4().hex}") == []
    assert found(env, f"nothing{uuid.uuid4().hex}", "/api/flows") == []


def test_flows_q_finds_the_flows_that_hold_a_matching_task(env: Env) -> None:
    n = tag()
    result = chain(env.task("add").s(n, 1), env.task("mul").s(3)).apply_async()
    assert result.get(timeout=20) == (n + 1) * 3
    root = result.parent.id
    graph = env.flow(root, 2)
    saw_stored()
    mul_id = next(node["task_id"] for node in graph["nodes"] if node["name"] == "t.mul")

    assert found(env, str((n + 1) * 3)) == [mul_id]  # the chain's last step, by its result
    assert found(env, str((n + 1) * 3), "/api/flows") == [root]
    assert found(env, str(n), "/api/flows") == [root]
    assert found(env, f"{n} {(n + 1) * 3}", "/api/flows") == []  # both words must be in one task


@pytest.mark.parametrize("sparse", [search.SPARSE, 3], ids=["few-matches", "many-matches"])
def test_paging_through_many_matches_walks_each_exactly_once_newest_first(
    env: Env, sparse: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `sparse` 3 makes 25 matches "many": the list walks its index against the match set instead.
    monkeypatch.setattr(search, "SPARSE", sparse)
    n = tag()
    ids = [env.task("echo").delay(batch=n, i=i).id for i in range(25)]
    for task_id in ids:
        stored(env, task_id)
    indexed(env)
    for q, path in ((f"batch:{n}", "/api/tasks"), (str(n), "/api/tasks"), (f"batch:{n}", "/api/flows")):
        seen: list[dict[str, Any]] = []
        cursor = None
        for _ in range(30):
            params: dict[str, Any] = {"q": q, "limit": 4, **({"cursor": cursor} if cursor else {})}
            page = env.api.get(path, params=params).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        key = "task_id" if path == "/api/tasks" else "root_id"
        assert sorted(item[key] for item in seen) == sorted(ids), q  # each task (its own flow) once
        assert [item[key] for item in seen] == found(env, q, path)  # in the order of one long page
        order = [item["sent_at" if key == "task_id" else "started_at"] for item in seen]
        assert order == sorted(order, reverse=True)


HOSTILE = [
    '"', '""', '"unbalanced', "city:\"New", ':', '::', 'key:', ':value', '"*^():-', "AND OR NOT NEAR",
    "NEAR(a b)", "a* ^b -c", "' OR 1=1 --", "'; DROP TABLE tasks; --", "%s %d ?", "$1 ::text", "{a,b}",
    "\\", "\x00", "a\x00b:c", "tokens @> '{x}'", "é" * 200, "x" * 512, "k:" + '"' * 100, "\u202e\ufeff",
    "<script>alert(1)</script>", "a:b " * 100,
]  # fmt: skip


def test_hostile_queries_get_200_or_422_never_500(env: Env) -> None:
    for q in [*HOSTILE, "y" * 513]:
        for path in ("/api/tasks", "/api/flows"):
            resp = env.api.get(path, params={"q": q})
            assert resp.status_code in (200, 422), (q[:40], path, resp.status_code, resp.text[:200])


# ---- the index itself, on both engines -------------------------------------------------------------


def entries(store: SqlStore) -> int:
    return int(store._reading(lambda s: s.rows("SELECT COUNT(*) FROM task_search"))[0][0])


def q_ids(store: SqlStore, q: str) -> list[str]:
    return [t.task_id for t in store.list_tasks(TaskFilter(q=q), 100, None).items]


def test_a_stored_task_is_findable_once_the_indexer_ran_and_the_lag_is_0(store: SqlStore) -> None:
    task = uuid.uuid4().hex
    store.apply([event("sent", task, time.time(), kwargs={"customer_id": 4711, "city": "Paris"})])
    assert store.stats().search_lag > 0
    assert q_ids(store, "customer_id:4711") == []  # not yet: the fold does not index
    run = store.index_search()
    assert run.indexed >= 1
    assert run.lag == 0
    assert store.stats().search_lag == 0
    assert q_ids(store, "customer_id:4711 paris") == [task]
    assert store.index_search().indexed == 0  # nothing new


def test_a_consumer_s_indexer_leaves_the_newest_rows_to_its_next_run(store: SqlStore) -> None:
    task = uuid.uuid4().hex
    store.apply([event("sent", task, time.time(), kwargs={"customer_id": 4712})])
    # A settle longer than the test: no run of this process saw the counter that long ago.
    assert store.index_search(settle=3600).indexed == 0
    assert q_ids(store, "customer_id:4712") == []
    assert store.stats().search_lag > 0
    assert store.index_search(settle=0.0).indexed == 1
    assert q_ids(store, "customer_id:4712") == [task]


def test_retention_deletes_the_index_entries_of_deleted_tasks(store: SqlStore) -> None:
    old, new = uuid.uuid4().hex, uuid.uuid4().hex
    store.apply(
        [
            event("sent", old, 1.0, kwargs={"customer_id": 1}),
            event("sent", new, time.time(), kwargs={"customer_id": 2}),
        ]
    )
    store.index_search()
    assert entries(store) == 2
    assert store.sweep(ttl=3600, max_tasks=None) == 1
    assert entries(store) == 1
    assert q_ids(store, "customer_id:1") == []
    assert q_ids(store, "customer_id:2") == [new]


def test_an_entry_follows_the_task_and_a_migrated_store_is_indexed_from_its_events(
    store: SqlStore, store_url: str
) -> None:
    task, running = uuid.uuid4().hex, uuid.uuid4().hex
    store.apply([event("sent", task, 1.0, kwargs={"city": "Paris"})])
    store.index_search()
    assert q_ids(store, "city:paris") == [task]
    store.apply([event("failed", task, 2.0, exception="ValueError: no seats left")])
    store.apply([event("sent", running, 3.0, kwargs={"city": "Rome"})])
    store.index_search()
    assert q_ids(store, "city:paris seats") == [task]
    # A store migrated to schema 4 has an empty index and no watermark: another process (nothing
    # handed over by its own fold) fills it from the stored events.
    store._writing(lambda s, seq: s.run("DELETE FROM task_search"))
    store._writing(lambda s, seq: s.run("DELETE FROM meta WHERE key IN ('search_seq', 'search_num')"))
    assert q_ids(store, "seats") == []
    other = open_store(store_url)
    try:
        assert other.index_search().lag == 0
        assert q_ids(store, "city:paris seats") == [task]
        assert q_ids(store, "city:rome") == [running]
        # This process carries on after another one indexed meanwhile (it forgets what it wrote).
        store.apply([event("succeeded", running, 5.0, result="booked")])
        store.index_search()
        assert q_ids(store, "city:rome booked") == [running]
    finally:
        other.close()
