"""GET /api/flows/{root_id} draws every canvas shape exactly: real worker, real Redis, real uvicorn.

The whole pipeline runs for real: the tracked canvas app publishes to a Redis stream, the server's
embedded consumer folds the events into the store (SQLite file and PostgreSQL), and the test reads the
graph over HTTP. Each test checks the node set, the edge kinds, the group/chord containers, the final
states, the retries and the order of the timestamps a user sees on the timeline.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord, group
from celery.exceptions import TaskRevokedError
from celery.utils import uuid as celery_uuid
from tests.support.flow_env import Env, env_for
from tests.support.wait import wait_for
from tests.support.worker import revoke_confirmed

pytestmark = pytest.mark.slow


# (store, celery-flow transport): both stores over Redis Streams, SQLite over RabbitMQ and over SQS (moto).
# Celery itself runs on Redis here, except on SQS, where it runs on SQS too; the transport is what `init()`
# publishes to and the server consumes.
@pytest.fixture(scope="module", params=["sqlite-redis", "postgresql-redis", "sqlite-amqp", "sqlite-sqs"])
def env(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    yield from env_for(request.param, request, redis_url, tmp_path_factory.mktemp("graphs"))


def edges(graph: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["source"], e["target"], e["kind"]) for e in graph["edges"]}


def node_ids(graph: dict[str, Any]) -> set[str]:
    return {n["task_id"] for n in graph["nodes"]}


def nodes_by_id(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["task_id"]: n for n in graph["nodes"]}


def containers(graph: dict[str, Any]) -> set[tuple[str, frozenset[str], str | None]]:
    return {(g["kind"], frozenset(g["members"]), g["callback_id"]) for g in graph["groups"]}


def assert_ran_in_order(node: dict[str, Any]) -> None:
    """sent <= received <= started <= finished, as the timeline draws them."""
    stamps = [node[k] for k in ("sent_at", "received_at", "started_at", "finished_at")]
    assert all(s is not None for s in stamps), node
    assert stamps == sorted(stamps), node


def assert_all_succeeded(graph: dict[str, Any]) -> None:
    for node in graph["nodes"]:
        assert node["state"] == "SUCCESS", node
        assert node["retries"] == 0
        assert_ran_in_order(node)


def assert_after(graph: dict[str, Any], before: str, after: str) -> None:
    """`after` started only once `before` had finished (a chain step, a chord callback)."""
    nodes = nodes_by_id(graph)
    assert nodes[before]["finished_at"] <= nodes[after]["started_at"]


def test_chain(env: Env) -> None:
    add, mul = env.task("add"), env.task("mul")
    r = chain(add.s(1, 1), mul.s(3), add.s(4)).apply_async()
    assert r.get(timeout=15) == 10
    c, b = r.id, r.parent.id
    a = r.parent.parent.id
    graph = env.flow(a, 3)
    assert graph["root_id"] == a
    assert node_ids(graph) == {a, b, c}
    assert edges(graph) == {(a, b, "chain"), (b, c, "chain")}
    assert graph["groups"] == []
    assert_all_succeeded(graph)
    assert_after(graph, a, b)
    assert_after(graph, b, c)
    assert graph["critical_path"] == [a, b, c]
    assert [n["name"] for n in graph["nodes"]] == ["t.add", "t.mul", "t.add"]


def test_group(env: Env) -> None:
    root, ids = env.launch("group")
    graph = env.flow(root, 4)
    members = set(ids["members"])
    assert node_ids(graph) == {root} | members
    assert edges(graph) == {(root, m, "spawn") for m in members}
    assert containers(graph) == {("group", frozenset(members), None)}
    assert {g["id"] for g in graph["groups"]} == {ids["group"]}
    assert_all_succeeded(graph)


def test_chord(env: Env) -> None:
    root, ids = env.launch("chord")
    graph = env.flow(root, 5)
    members, callback = set(ids["members"]), ids["callback"]
    assert node_ids(graph) == {root, callback} | members
    assert edges(graph) == {(root, m, "spawn") for m in members} | {(m, callback, "chord") for m in members}
    assert containers(graph) == {("chord", frozenset(members), callback)}
    assert_all_succeeded(graph)
    for m in members:
        assert_after(graph, m, callback)


def test_chord_of_chains(env: Env) -> None:
    root, ids = env.launch("chord_of_chains")
    graph = env.flow(root, 6)
    heads, tails, callback = ids["heads"], ids["tails"], ids["callback"]
    assert node_ids(graph) == {root, callback, *heads, *tails}
    assert edges(graph) == (
        {(root, h, "spawn") for h in heads}
        | {(h, t, "chain") for h, t in zip(heads, tails, strict=True)}
        | {(t, callback, "chord") for t in tails}
    )
    assert ("chord", frozenset(tails), callback) in containers(graph)
    assert_all_succeeded(graph)
    for h, t in zip(heads, tails, strict=True):
        assert_after(graph, h, t)
        assert_after(graph, t, callback)


def test_chain_with_group_and_chord(env: Env) -> None:
    add, mul, xsum = env.task("add"), env.task("mul"), env.task("xsum")
    r = chain(
        add.s(1, 2), group(add.s(1), mul.s(2)), chord([add.si(1, 1), add.si(2, 2)], xsum.s())
    ).apply_async()
    assert r.get(timeout=15) == 6
    d = r.id
    c_ids = [c.id for c in r.parent.results]
    b_group = r.parent.parent
    b_ids = [c.id for c in b_group.results]
    a = b_group.parent.id
    graph = env.flow(a, 6)
    assert node_ids(graph) == {a, d, *b_ids, *c_ids}
    assert edges(graph) == (
        {(a, b, "chain") for b in b_ids}
        | {(b, c, "chain") for b in b_ids for c in c_ids}
        | {(c, d, "chord") for c in c_ids}
    )
    groups = containers(graph)
    assert ("group", frozenset(b_ids), None) in groups
    assert ("chord", frozenset(c_ids), d) in groups
    # the callback carries group b's id (DESIGN §7) but is not drawn inside group b
    assert len(groups) == 2
    assert_all_succeeded(graph)
    assert graph["critical_path"][0] == a
    assert graph["critical_path"][-1] == d


def test_nested_chords(env: Env) -> None:
    root, ids = env.launch("nested_chords")
    graph = env.flow(root, 6)
    simple, inner_cb, outer_cb = ids["simple"], ids["inner_callback"], ids["callback"]
    nodes = nodes_by_id(graph)
    inner_members = {t for t, n in nodes.items() if n["chord_id"] == inner_cb}
    assert len(inner_members) == 2
    assert node_ids(graph) == {root, simple, inner_cb, outer_cb} | inner_members
    assert edges(graph) == (
        {(root, simple, "spawn")}
        | {(root, m, "spawn") for m in inner_members}
        | {(m, inner_cb, "chord") for m in inner_members}
        | {(simple, outer_cb, "chord"), (inner_cb, outer_cb, "chord")}
    )
    assert containers(graph) == {
        ("chord", frozenset(inner_members), inner_cb),
        ("chord", frozenset({simple, inner_cb}), outer_cb),
    }
    assert_all_succeeded(graph)
    assert_after(graph, inner_cb, outer_cb)


def test_delay_inside_a_task(env: Env) -> None:
    r = env.task("spawn").delay(3)
    children = r.get(timeout=15)
    graph = env.flow(r.id, 4)
    assert node_ids(graph) == {r.id, *children}
    assert edges(graph) == {(r.id, c, "spawn") for c in children}
    assert graph["groups"] == []
    assert_all_succeeded(graph)
    nodes = nodes_by_id(graph)
    for child in children:
        # a child is sent while its parent runs
        assert nodes[r.id]["started_at"] <= nodes[child]["sent_at"] <= nodes[r.id]["finished_at"]


def test_nested_delay_keeps_one_root(env: Env) -> None:
    r = env.task("spawn_nested").delay(2)
    r.get(timeout=15)
    graph = env.flow(r.id, 4)
    nodes = nodes_by_id(graph)
    assert all(n["root_id"] == r.id for n in graph["nodes"])
    assert [e[2] for e in edges(graph)] == ["spawn"] * 3
    # one line of descent: root -> level1 -> level2 -> leaf
    parents = {n["task_id"]: n["parent_id"] for n in nodes.values() if n["task_id"] != r.id}
    assert len(parents) == 3
    assert {(p, c, "spawn") for c, p in parents.items()} == edges(graph)
    assert_all_succeeded(graph)


def test_replace(env: Env) -> None:
    r = env.task("replaced").delay(5)
    assert r.get(timeout=15) == 105
    graph = env.flow(r.id, 1)
    (node,) = (n for n in graph["nodes"] if n["task_id"] == r.id)
    assert node["state"] == "SUCCESS"
    detail = env.api.get(f"/api/tasks/{r.id}").json()
    assert detail["result"] == 105
    types = [e["type"] for e in detail["events"]]
    assert types.count("succeeded") == 1
    assert "started" in types


def test_link_error(env: Env) -> None:
    fail, errback = env.task("fail"), env.task("errback")
    r = fail.apply_async(("nope",), link_error=errback.s())
    with pytest.raises(ValueError, match="nope"):
        r.get(timeout=15)
    graph = env.flow(r.id, 2)
    nodes = nodes_by_id(graph)
    (eb,) = set(nodes) - {r.id}
    assert edges(graph) == {(r.id, eb, "errback")}
    assert nodes[r.id]["state"] == "FAILURE"
    assert nodes[r.id]["exception"] == "ValueError: nope"
    assert nodes[eb]["state"] == "SUCCESS"
    assert nodes[eb]["name"] == "t.errback"
    assert_after(graph, r.id, eb)
    detail = env.api.get(f"/api/tasks/{r.id}").json()
    assert "raise ValueError(msg)" in detail["traceback"]


def test_retries_with_countdown(env: Env) -> None:
    r = env.task("flaky").delay(succeed_on=2, countdown=0.3)
    assert r.get(timeout=20) == 2
    graph = env.flow(r.id, 1)
    assert node_ids(graph) == {r.id}
    assert edges(graph) == set()  # a retry is re-sent by the task itself: no self edge
    (node,) = graph["nodes"]
    assert node["state"] == "SUCCESS"
    assert node["retries"] == 2
    detail = env.api.get(f"/api/tasks/{r.id}").json()
    events = detail["events"]
    assert [e["retries"] for e in events if e["type"] == "started"] == [0, 1, 2]
    assert [e["retries"] for e in events if e["type"] == "retried"] == [0, 1]
    started = [e["ts"] for e in events if e["type"] == "started"]
    retried = [e["ts"] for e in events if e["type"] == "retried"]
    # attempt n started, failed and was retried before attempt n+1 started
    assert started[0] < retried[0] < started[1] < retried[1] < started[2]
    assert started[2] <= node["finished_at"]
    assert [s["kind"] for s in detail["segments"]].count("retry") == 2


def test_eta(env: Env) -> None:
    r = env.task("add").apply_async((2, 2), countdown=1)
    assert r.get(timeout=15) == 4
    graph = env.flow(r.id, 1)
    detail = env.api.get(f"/api/tasks/{r.id}").json()
    assert detail["state"] == "SUCCESS"
    assert detail["eta"] is not None
    assert detail["received_at"] < detail["eta"] <= detail["started_at"] + 0.05
    assert_ran_in_order(graph["nodes"][0])


def test_revoked(env: Env) -> None:
    if env.app.conf.broker_url.startswith("sqs://"):
        pytest.skip("Celery cannot revoke over SQS: its broker has no broadcast (remote control)")
    task_id = celery_uuid()
    revoke_confirmed(env.app, task_id)
    r = env.task("add").apply_async((1, 1), task_id=task_id)
    with pytest.raises(TaskRevokedError):
        r.get(timeout=15)
    graph = env.flow(task_id, 1)
    (node,) = graph["nodes"]
    assert node["state"] == "REVOKED"
    assert node["started_at"] is None


def test_expired(env: Env) -> None:
    already = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=1)
    r = env.task("add").apply_async((1, 1), expires=already)
    graph = env.flow(r.id, 1)
    assert graph["nodes"][0]["state"] == "REVOKED"
    detail = env.api.get(f"/api/tasks/{r.id}").json()
    assert [e["reason"] for e in detail["events"] if e["type"] == "revoked"] == ["expired"]


def test_rejected(env: Env) -> None:
    r = env.task("reject").delay(requeue=False)
    graph = env.flow(r.id, 1)
    (node,) = graph["nodes"]
    assert node["state"] == "REJECTED"
    assert node["finished_at"] is not None


def test_flow_list_and_health_agree(env: Env) -> None:
    r = chain(env.task("add").s(1, 1), env.task("add").s(1)).apply_async()
    r.get(timeout=15)
    root = r.parent.id
    env.flow(root, 2)
    flows = env.api.get("/api/flows", params={"root_id": root}).json()["items"]
    assert [(f["root_id"], f["state"], f["task_count"], f["counts"]) for f in flows] == [
        (root, "SUCCESS", 2, {"SUCCESS": 2})
    ]
    health = env.api.get("/api/health").json()
    assert health["status"] == "ok"
    assert health["store"]["reachable"] is True
    assert health["transport"]["reachable"] is True
    assert health["rejected_total"] == 0


@pytest.mark.parametrize("shape", ["group", "chord"])
def test_a_canvas_started_outside_a_task_is_one_flow(env: Env, shape: str) -> None:
    add, xsum = env.task("add"), env.task("xsum")
    if shape == "group":
        res = group(add.s(i, i) for i in range(3)).apply_async()
        res.get(timeout=15)
        ids = [r.id for r in res.results]
    else:
        res = chord([add.s(i, i) for i in range(3)], xsum.s()).apply_async()
        res.get(timeout=15)
        ids = [r.id for r in res.parent.results] + [res.id]

    def roots() -> set[str] | None:
        found = [env.api.get(f"/api/tasks/{t}").json() for t in ids]
        if not all(d.get("state") == "SUCCESS" for d in found):
            return None
        return {d["root_id"] for d in found}

    (root,) = wait_for(roots, 30, "every member stored")
    # Celery gives each member its own root_id; celery-flow roots them at the group id instead, so the
    # whole canvas is one flow with its container.
    graph = env.api.get(f"/api/flows/{root}").json()
    assert {n["task_id"] for n in graph["nodes"]} == set(ids)
    kinds = {g["kind"] for g in graph["groups"]}
    assert kinds == ({"group"} if shape == "group" else {"chord"})
    rows = env.api.get("/api/flows", params={"limit": 100}).json()["items"]
    (row,) = [r for r in rows if r["root_id"] == root]
    assert row["task_count"] == len(ids)
    assert row["root_name"] == add.name
