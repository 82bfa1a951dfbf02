"""Flows of any size: `GET /api/flows/{root_id}` sends a big group collapsed, and
`GET /api/flows/{root_id}/groups/{group_id}/members` pages through it.

The 100,000-member chord is published to a real Redis stream and folded by a real `celery-flow consume`
once per session (tests/support/bigflow.py `big_flow`); the server reads it over real HTTP. A smaller
chord written into each engine checks that SQLite and PostgreSQL answer alike and that the collapsed
figures match the full graph's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.bigflow import BIG_MEMBERS, FoldedFlow, big_chord
from tests.support.postgres import own_sql_store
from tests.support.server_helpers import serving

from celery_flow.server import create_app
from celery_flow.store.sql import SqlStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_api(big_flow: FoldedFlow) -> Iterator[httpx.Client]:
    app = create_app(store=big_flow.store_url, embedded_consumer=False)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client


def walk(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged member list, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        response = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_a_100000_member_chord_comes_collapsed_under_1_mb_with_exact_counts(
    big_flow: FoldedFlow, big_api: httpx.Client
) -> None:
    chord = big_flow.chord
    response = big_api.get(f"/api/flows/{chord.root_id}")
    assert response.status_code == 200
    print(
        f"\n100,000-member chord: folded in {big_flow.fold_seconds:.1f} s, "
        f"graph {len(response.content):,} bytes"
    )
    assert len(response.content) < 1_000_000
    graph = response.json()
    failures = len(chord.failed)
    assert graph["summary"]["counts"] == {"SUCCESS": BIG_MEMBERS - failures + 2, "FAILURE": failures}
    assert graph["summary"]["task_count"] == BIG_MEMBERS + 2
    assert graph["summary"]["state"] == "FAILURE"

    (group,) = graph["collapsed"]
    assert (group["id"], group["kind"], group["callback_id"]) == (chord.group_id, "chord", chord.callback_id)
    assert group["total"] == BIG_MEMBERS
    assert group["counts"] == {"SUCCESS": BIG_MEMBERS - failures, "FAILURE": failures}
    assert group["retried"] == len(chord.retried)
    assert group["name"] == "big.fetch"
    # Runtimes are 1 ms .. 1 s in steps of 1 ms, each 100 times: nearest-rank percentiles are exact.
    assert group["runtime"] == {"p50": pytest.approx(0.5), "p95": pytest.approx(0.95),
                                "p99": pytest.approx(0.99), "max": pytest.approx(1.0)}  # fmt: skip
    assert group["queue_wait"]["p50"] is not None
    assert group["first_seen"] is not None
    assert group["last_finished"] is not None

    nodes = {n["task_id"]: n for n in graph["nodes"]}
    assert set(chord.failed) <= set(nodes), "every failed member is listed"
    assert all(nodes[t]["state"] == "FAILURE" for t in chord.failed)
    assert set(group["listed"]) <= set(nodes)
    # The root, the callback and the listed members; not 100,000 nodes.
    assert len(nodes) == 2 + len(group["listed"])
    hidden = BIG_MEMBERS - len(group["listed"])
    summarised = {(e["source"], e["target"], e["kind"]): e["count"] for e in graph["edges"] if e["count"] > 1}
    assert summarised == {
        (chord.root_id, group["node_id"], "spawn"): hidden,
        (group["node_id"], chord.callback_id, "chord"): hidden,
    }
    # The critical path: root, the member that finished last, the callback.
    path = graph["critical_path"]
    assert (path[0], path[-1], len(path)) == (chord.root_id, chord.callback_id, 3)
    last = max(
        (n for n in nodes.values() if n.get("group_id") == chord.group_id), key=lambda n: n["finished_at"]
    )
    assert path[1] == last["task_id"]
    assert last["finished_at"] == pytest.approx(group["last_finished"])


def test_paging_walks_every_member_exactly_once_in_each_order(
    big_flow: FoldedFlow, big_api: httpx.Client
) -> None:
    chord = big_flow.chord
    path = f"/api/flows/{chord.root_id}/groups/{chord.group_id}/members"
    newest = walk(big_api, path, sort="newest", limit=500)
    ids = [m["task_id"] for m in newest]
    assert len(ids) == len(set(ids)) == BIG_MEMBERS
    assert not {chord.callback_id, chord.root_id} & set(ids)
    stamps = [(m["sent_at"], m["task_id"]) for m in newest]
    assert stamps == sorted(stamps, reverse=True)

    slowest = walk(big_api, path, sort="slowest", limit=500)
    assert sorted(m["task_id"] for m in slowest) == sorted(ids)
    runtimes = [(m["runtime"], m["task_id"]) for m in slowest]
    assert runtimes == sorted(runtimes, reverse=True)

    failed = walk(big_api, path, sort="slowest", state="FAILURE", limit=7)
    assert sorted(m["task_id"] for m in failed) == sorted(chord.failed)


# -- both engines, a chord small enough to compare with the full graph ---------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore[Any]]:
    yield from own_sql_store(request.param, request, tmp_path)


def test_both_engines_collapse_and_page_alike(store: SqlStore[Any]) -> None:
    chord = big_chord(400, fail_every=50)
    events = list(chord.events())
    for start in range(0, len(events), 500):
        store.apply(events[start : start + 500])
    app = create_app(store=store, embedded_consumer=False)
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as api:
        full = api.get(f"/api/flows/{chord.root_id}", params={"collapse": 1000}).json()
        assert full["collapsed"] == []
        assert len(full["nodes"]) == 402
        small = api.get(f"/api/flows/{chord.root_id}", params={"collapse": 100}).json()
        assert small["summary"] == full["summary"]
        assert small["critical_path"] == full["critical_path"]
        (group,) = small["collapsed"]
        members = [n for n in full["nodes"] if n.get("chord_id") == chord.callback_id]
        counts: dict[str, int] = {}
        for n in members:
            counts[n["state"]] = counts.get(n["state"], 0) + 1
        assert group["counts"] == counts
        assert group["total"] == 400
        runtimes = sorted(n["runtime"] for n in members)
        assert group["runtime"]["p95"] == pytest.approx(runtimes[math.ceil(0.95 * 400) - 1])
        assert group["runtime"]["max"] == pytest.approx(runtimes[-1])
        waits = sorted(n["queue_wait"] for n in members)
        assert group["queue_wait"]["p50"] == pytest.approx(waits[math.ceil(0.5 * 400) - 1])
        assert {n["task_id"] for n in small["nodes"]} >= set(chord.failed) | set(chord.retried)

        path = f"/api/flows/{chord.root_id}/groups/{chord.group_id}/members"
        for sort in ("newest", "slowest"):
            for limit in (1, 7, 500):
                walked = [m["task_id"] for m in walk(api, path, sort=sort, limit=limit)]
                assert sorted(walked) == sorted(n["task_id"] for n in members), (sort, limit)
        assert [m["state"] for m in walk(api, path, state="FAILURE")] == ["FAILURE"] * len(chord.failed)

        assert api.get(f"/api/flows/{chord.root_id}/groups/nope/members").status_code == 404
        assert api.get(f"/api/flows/nope/groups/{chord.group_id}/members").status_code == 404
        bad = api.get(path, params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422
        assert "cursor" in bad.text
        assert api.get(path, params={"sort": "fastest"}).status_code == 422


def test_live_updates_a_collapsed_group_by_its_figures_not_member_by_member(
    tmp_path: Path,
) -> None:
    import asyncio

    from tests.integration.test_live import collect

    from celery_flow.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'live.db'}")
    chord = big_chord(300, fail_every=100)
    events = list(chord.events())
    sent = [e for e in events if e.type == "sent"]
    store.apply(sent)
    member_ids = {e.task_id for e in sent} - {chord.root_id, chord.callback_id}
    app = create_app(store=store, embedded_consumer=False)
    try:
        with serving(app) as url:
            graph = httpx.get(f"{url}/api/flows/{chord.root_id}", params={"collapse": 100}).json()
            assert [g["id"] for g in graph["collapsed"]] == [chord.group_id]
            assert graph["collapsed"][0]["counts"] == {"PENDING": 300}

            def run() -> None:
                rest = [e for e in events if e.type != "sent"]
                for start in range(0, len(rest), 200):
                    store.apply(rest[start : start + 200])

            def done(frames: list[dict[str, Any]]) -> bool:
                groups = [f["group"] for f in frames if f["type"] == "group"]
                return bool(groups) and groups[-1]["counts"].get("SUCCESS") == 300 - len(chord.failed)

            ws = url.replace("http://", "ws://") + "/api/live"
            frames = asyncio.run(
                collect(ws, done, send=[{"type": "filter", "root_id": chord.root_id,
                                         "collapsed": [chord.group_id]}], start=run)
            )  # fmt: skip
    finally:
        store.close()
    pushed = [i for f in frames if f["type"] == "tasks" for i in f["items"] if i["task_id"] in member_ids]
    # Members come only when they fail or retry; everything else arrives as the group's figures.
    assert pushed
    assert {i["state"] for i in pushed} <= {"FAILURE", "RETRY"}
    assert {i["task_id"] for i in pushed if i["state"] == "FAILURE"} == set(chord.failed)
    last = [f["group"] for f in frames if f["type"] == "group"][-1]
    assert last["total"] == 300
    assert last["counts"] == {
        "SUCCESS": 300 - len(chord.failed),
        "FAILURE": len(chord.failed),
    }
