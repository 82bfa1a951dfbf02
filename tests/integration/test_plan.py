"""The whole plan from the first `sent`: every step of a workflow is a node as soon as it is published
(PLANNED, with its real name), and the steps that can no longer run end NOT_RUN with the reason.

Real worker, real brokers, real server; both stores, both transports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, chord, group
from tests.support.flow_env import TERMINAL, Env, env_for
from tests.support.wait import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite-redis", "postgresql-redis", "sqlite-amqp", "postgresql-amqp"])
def env(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    yield from env_for(request.param, request, redis_url, tmp_path_factory.mktemp("plan"))


def edges(graph: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["source"], e["target"], e["kind"]) for e in graph["edges"]}


def states(graph: dict[str, Any]) -> dict[str, str]:
    return {n["task_id"]: n["state"] for n in graph["nodes"]}


def by_id(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["task_id"]: n for n in graph["nodes"]}


def finished(env: Env, root: str, ids: set[str]) -> dict[str, Any]:
    """The graph once it holds exactly `ids`, every one in a final state."""

    def ready(graph: dict[str, Any]) -> bool:
        return set(states(graph)) == ids and all(s in TERMINAL for s in states(graph).values())

    return env.graph(root, ready, f"exactly {len(ids)} nodes, all final")


def flow_row(env: Env, root: str) -> dict[str, Any]:
    (row,) = env.api.get("/api/flows", params={"root_id": root}).json()["items"]
    return row


def assert_not_run(graph: dict[str, Any], ids: list[str], upstream: str) -> None:
    nodes = by_id(graph)
    for task_id in ids:
        assert nodes[task_id]["state"] == "NOT_RUN", nodes[task_id]
        assert nodes[task_id]["reason"] == f"upstream {upstream} failed"


def test_a_chain_is_drawn_whole_from_the_first_sent(env: Env) -> None:
    hold, fail, add, mul = env.task("hold"), env.task("fail"), env.task("add"), env.task("mul")
    key = f"plan_hold_{uuid.uuid4().hex}"
    r = chain(hold.si(key), fail.si("step 2"), add.si(1, 2), mul.si(2, 3)).apply_async()
    s4, s3 = r.id, r.parent.id
    s2 = r.parent.parent.id
    s1 = r.parent.parent.parent.id
    try:
        # Step 1 runs until released: steps 2-4 are known from its message alone.
        early = env.graph(s1, lambda g: len(g["nodes"]) == 4, "4 nodes while step 1 is held")
        nodes = by_id(early)
        assert nodes[s1]["state"] in ("PENDING", "RECEIVED", "STARTED")
        assert [(nodes[t]["state"], nodes[t]["name"]) for t in (s2, s3, s4)] == [
            ("PLANNED", "t.fail"), ("PLANNED", "t.add"), ("PLANNED", "t.mul"),
        ]  # fmt: skip
        assert edges(early) == {(s1, s2, "chain"), (s2, s3, "chain"), (s3, s4, "chain")}
        assert early["summary"]["state"] in ("PENDING", "RUNNING")
        planned = env.api.get(f"/api/tasks/{s3}").json()
        assert (planned["state"], planned["name"], planned["events"]) == ("PLANNED", "t.add", [])
    finally:
        env.app.backend.client.set(key, 1)
    graph = finished(env, s1, {s1, s2, s3, s4})
    assert states(graph) == {s1: "SUCCESS", s2: "FAILURE", s3: "NOT_RUN", s4: "NOT_RUN"}
    assert_not_run(graph, [s3, s4], s2)
    assert graph["summary"]["counts"] == {"SUCCESS": 1, "FAILURE": 1, "NOT_RUN": 2}
    row = flow_row(env, s1)
    assert (row["state"], row["counts"], row["task_count"]) == (
        "FAILURE", {"SUCCESS": 1, "FAILURE": 1, "NOT_RUN": 2}, 4,
    )  # fmt: skip
    detail = env.api.get(f"/api/tasks/{s4}").json()
    assert (detail["state"], detail["name"], detail["reason"]) == (
        "NOT_RUN",
        "t.mul",
        f"upstream {s2} failed",
    )
    env.app.backend.client.delete(key)


def test_a_chord_whose_member_fails_never_runs_its_named_callback(env: Env) -> None:
    add, fail, xsum = env.task("add"), env.task("fail"), env.task("xsum")
    r = chord([add.si(1, 1), fail.si("member")], xsum.s()).apply_async()
    callback, root = r.id, r.parent.id
    ok, bad = (m.id for m in r.parent.results)
    graph = finished(env, root, {ok, bad, callback})
    nodes = by_id(graph)
    assert nodes[callback]["name"] == "t.xsum"
    assert_not_run(graph, [callback], bad)
    assert edges(graph) == {(ok, callback, "chord"), (bad, callback, "chord")}
    assert flow_row(env, root)["counts"] == {"SUCCESS": 1, "FAILURE": 1, "NOT_RUN": 1}


def _chain_group_chord(env: Env, fail_member: bool) -> tuple[str, list[str], list[str], str, Any]:
    add, mul, xsum, fail = env.task("add"), env.task("mul"), env.task("xsum"), env.task("fail")
    second = fail.s() if fail_member else mul.s(2)
    r = chain(
        add.s(1, 2), group(add.s(1), second), chord([add.si(1, 1), add.si(2, 2)], xsum.s())
    ).apply_async()
    d = r.id
    c_ids = [c.id for c in r.parent.results]
    b_group = r.parent.parent
    b_ids = [b.id for b in b_group.results]
    return b_group.parent.id, b_ids, c_ids, d, r


def test_a_chain_holding_a_group_and_a_chord(env: Env) -> None:
    a, b_ids, c_ids, d, r = _chain_group_chord(env, fail_member=False)
    assert r.get(timeout=15) == 6
    graph = finished(env, a, {a, d, *b_ids, *c_ids})
    assert set(states(graph).values()) == {"SUCCESS"}
    assert edges(graph) == (
        {(a, b, "chain") for b in b_ids}
        | {(b, c, "chain") for b in b_ids for c in c_ids}
        | {(c, d, "chord") for c in c_ids}
    )
    assert len(graph["nodes"]) == 6
    assert flow_row(env, a)["counts"] == {"SUCCESS": 6}


def test_a_failure_inside_a_chain_holding_a_group_and_a_chord(env: Env) -> None:
    a, b_ids, c_ids, d, r = _chain_group_chord(env, fail_member=True)
    with pytest.raises(Exception):  # noqa: B017 (Celery raises the member's error or a ChordError)
        r.get(timeout=15)
    graph = finished(env, a, {a, d, *b_ids, *c_ids})
    ok, bad = b_ids
    assert states(graph) == {a: "SUCCESS", ok: "SUCCESS", bad: "FAILURE"} | {
        t: "NOT_RUN" for t in [*c_ids, d]
    }
    assert_not_run(graph, [*c_ids, d], bad)
    assert flow_row(env, a)["counts"] == {"SUCCESS": 2, "FAILURE": 1, "NOT_RUN": 3}


def _chord_with_chain_callback(env: Env, fail_member: bool) -> tuple[str, list[str], list[str]]:
    add, mul, xsum, fail = env.task("add"), env.task("mul"), env.task("xsum"), env.task("fail")
    members, body = [uuid.uuid4().hex for _ in range(2)], [uuid.uuid4().hex for _ in range(3)]
    second = fail.si("member") if fail_member else add.si(2, 2)
    header = [add.si(1, 1).set(task_id=members[0]), second.set(task_id=members[1])]
    steps = [xsum.s(), add.s(1), mul.s(2)]
    chord(header, chain(*(s.set(task_id=t) for s, t in zip(steps, body, strict=True)))).apply_async()
    # Started outside a task: the flow is rooted at the header's group id.
    return _root_of(env, members[0]), members, body


def _root_of(env: Env, task_id: str) -> str:
    def root() -> str | None:
        resp = env.api.get(f"/api/tasks/{task_id}")
        return str(resp.json()["root_id"]) if resp.status_code == 200 else None

    return wait_for(root, 30, f"task {task_id} stored")


def test_a_chord_whose_callback_is_a_chain(env: Env) -> None:
    root, members, body = _chord_with_chain_callback(env, fail_member=False)
    graph = finished(env, root, {*members, *body})
    assert set(states(graph).values()) == {"SUCCESS"}
    x, y, z = body
    assert edges(graph) == {(m, x, "chord") for m in members} | {(x, y, "chain"), (y, z, "chain")}
    assert flow_row(env, root)["counts"] == {"SUCCESS": 5}


def test_a_failure_in_a_chord_whose_callback_is_a_chain(env: Env) -> None:
    root, members, body = _chord_with_chain_callback(env, fail_member=True)
    graph = finished(env, root, {*members, *body})
    assert [by_id(graph)[t]["name"] for t in body] == ["t.xsum", "t.add", "t.mul"]
    assert_not_run(graph, body, members[1])
    assert flow_row(env, root)["counts"] == {"SUCCESS": 1, "FAILURE": 1, "NOT_RUN": 3}


def test_an_errback_not_needed_never_runs(env: Env) -> None:
    add, errback = env.task("add"), env.task("errback")
    r = add.apply_async((1, 2), link_error=errback.s())
    assert r.get(timeout=15) == 3

    def two(graph: dict[str, Any]) -> bool:
        return len(graph["nodes"]) == 2 and all(s in TERMINAL for s in states(graph).values())

    graph = env.graph(r.id, two, "the task and its errback, final")
    (eb,) = set(states(graph)) - {r.id}
    node = by_id(graph)[eb]
    assert (node["name"], node["state"], node["reason"]) == (
        "t.errback", "NOT_RUN", f"not needed: upstream {r.id} succeeded",
    )  # fmt: skip
    assert edges(graph) == {(r.id, eb, "errback")}
    assert flow_row(env, r.id)["state"] == "SUCCESS"


def test_an_errback_runs_when_needed(env: Env) -> None:
    fail, errback = env.task("fail"), env.task("errback")
    r = fail.apply_async(("nope",), link_error=errback.s())
    with pytest.raises(ValueError, match="nope"):
        r.get(timeout=15)

    def ran(graph: dict[str, Any]) -> bool:
        return sorted(states(graph).values()) == ["FAILURE", "SUCCESS"]

    graph = env.graph(r.id, ran, "the failed task and its errback that ran")
    (eb,) = set(states(graph)) - {r.id}
    detail = env.api.get(f"/api/tasks/{eb}").json()
    assert detail["name"] == "t.errback"
    assert detail["events"][0]["type"] == "sent"
    assert flow_row(env, r.id)["counts"] == {"FAILURE": 1, "SUCCESS": 1}


def test_an_errback_called_inside_the_worker_is_not_planned(env: Env) -> None:
    fail, on_error = env.task("fail"), env.task("on_error")
    r = fail.apply_async(("inline",), link_error=on_error.s())
    with pytest.raises(ValueError, match="inline"):
        r.get(timeout=15)
    graph = env.graph(r.id, lambda g: states(g) == {r.id: "FAILURE"}, "the failed task alone")
    assert graph["summary"]["state"] == "FAILURE"
    assert flow_row(env, r.id)["counts"] == {"FAILURE": 1}
