"""The plan: what tracking/plan.py reads out of the messages Celery really sends, and how the store keeps
planned steps (store/plan.py) whatever order the events arrive in."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import msgspec
import pytest
from celery import Celery, chain, chord, group, signals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.events import event

from celery_flow.events import MAX_EVENT_BYTES, MAX_PLAN_STEPS, Event, PlanStep, decode, encode
from celery_flow.store import TaskFilter, open_store
from celery_flow.store.backfill import refold_batch
from celery_flow.store.migrations import schedule_refold
from celery_flow.store.sql import SqlStore
from celery_flow.tracking.lineage import freeze_callbacks
from celery_flow.tracking.plan import MAX_PLAN_IDS, plan_of

# -- extraction ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> Celery:
    a = Celery("plan_unit", broker="memory://", backend="cache+memory://", set_as_current=False)
    for name in ("a", "b", "c", "d", "sum", "errback"):
        a.task(name=f"p.{name}", shared=False)(_noop)
    return a


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


@pytest.fixture
def sent(app: Celery) -> Iterator[list[tuple[str, str, dict[str, Any]]]]:
    """(task id, name, embed) of each message the app publishes, as its `sent` event sees them."""
    messages: list[tuple[str, str, dict[str, Any]]] = []

    def capture(body: Any = None, headers: Any = None, **_: Any) -> None:
        embed = body[2]
        freeze_callbacks(embed)
        messages.append((headers["id"], headers["task"], embed))

    signals.before_task_publish.connect(capture, weak=False, dispatch_uid="test_plan_capture")
    yield messages
    signals.before_task_publish.disconnect(capture, dispatch_uid="test_plan_capture")


def t(app: Celery, name: str) -> Any:
    return app.tasks[f"p.{name}"]


def steps(task_id: str, embed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    plan = plan_of(task_id, embed) or []
    return {s.task_id: msgspec.to_builtins(s) for s in plan}


def test_a_chain_plans_its_remaining_steps_in_order(app: Celery, sent: list[Any]) -> None:
    r = chain(t(app, "a").s(), t(app, "b").s(), t(app, "c").s(), t(app, "d").s()).apply_async()
    d, c, b = r.id, r.parent.id, r.parent.parent.id
    a = r.parent.parent.parent.id
    ((first, _, embed),) = sent
    assert first == a
    plan = plan_of(a, embed)
    assert plan is not None
    assert [msgspec.to_builtins(s) for s in plan] == [
        {"task_id": b, "name": "p.b", "after": [a], "parent_id": a, "links": [c]},
        {"task_id": c, "name": "p.c", "after": [b], "parent_id": b, "links": [d]},
        {"task_id": d, "name": "p.d", "after": [c], "parent_id": c},
    ]


def test_a_plain_message_has_no_plan(app: Celery, sent: list[Any]) -> None:
    t(app, "a").delay()
    ((task_id, _, embed),) = sent
    assert plan_of(task_id, embed) is None


def test_every_chord_member_plans_the_callback(app: Celery, sent: list[Any]) -> None:
    r = chord([t(app, "a").s(), t(app, "b").s()], t(app, "sum").s()).apply_async()
    members = {m.id for m in r.parent.results}
    planned = {task_id: steps(task_id, embed) for task_id, name, embed in sent if task_id in members}
    assert planned == {
        m: {r.id: {"task_id": r.id, "name": "p.sum", "after": [m], "on": "chord"}} for m in members
    }


def test_a_chain_holding_a_group_and_a_chord(app: Celery, sent: list[Any]) -> None:
    a, b, c, d, s = (t(app, n) for n in ("a", "b", "c", "d", "sum"))
    r = chain(a.s(), group(b.s(), c.s()), chord([d.si(), d.si()], s.s())).apply_async()
    callback, c_ids = r.id, [m.id for m in r.parent.results]
    b_group = r.parent.parent
    b_ids, first = [m.id for m in b_group.results], b_group.parent.id
    plan = steps(first, sent[0][2])
    assert set(plan) == {*b_ids, *c_ids, callback}
    for b_id in b_ids:
        assert plan[b_id]["after"] == [first]
        assert plan[b_id]["group_id"] == b_group.id
        assert set(plan[b_id]["links"]) == set(c_ids)  # group | chord: a chord whose callback is a chord
    for c_id in c_ids:
        assert (set(plan[c_id]["after"]), plan[c_id]["on"], plan[c_id]["chord_id"]) == (
            set(b_ids),
            "chord",
            callback,
        )
    assert (set(plan[callback]["after"]), plan[callback]["on"]) == (set(c_ids), "chord")
    assert "group_id" not in plan[callback]


def test_a_chord_whose_callback_is_a_chain(app: Celery, sent: list[Any]) -> None:
    a, b, c, d, s = (t(app, n) for n in ("a", "b", "c", "d", "sum"))
    chord([a.s(), b.s()], chain(s.s(), c.s(), d.s())).apply_async()
    member, _, embed = sent[0]
    plan = list(steps(member, embed).values())
    x, y, z = (p["task_id"] for p in plan)
    assert [(p["name"], p["after"], p.get("on", "success"), p.get("links")) for p in plan] == [
        ("p.sum", [member], "chord", [y]), ("p.c", [x], "success", [z]), ("p.d", [y], "success", None),
    ]  # fmt: skip


def test_a_chord_of_chains_plans_the_callback_from_each_head(app: Celery, sent: list[Any]) -> None:
    a, b, s = t(app, "a"), t(app, "b"), t(app, "sum")
    r = chord([chain(a.s(), b.s()), chain(a.s(), b.s())], s.s()).apply_async()
    tails = {m.id for m in r.parent.results}
    for head, _, embed in sent:
        if head in tails:
            continue
        plan = steps(head, embed)
        (tail,) = set(plan) - {r.id}
        assert tail in tails
        assert (plan[tail]["chord_id"], plan[tail].get("links")) == (r.id, None)  # a chord edge, not a link
        assert (plan[r.id]["after"], plan[r.id]["on"]) == ([tail], "chord")


def test_link_and_link_error(app: Celery, sent: list[Any]) -> None:
    r = t(app, "a").apply_async(link=t(app, "b").s(), link_error=t(app, "errback").s())
    ((_, _, embed),) = sent
    plan = list(steps(r.id, embed).values())
    assert [(p["name"], p["after"], p.get("on", "success")) for p in plan] == [
        ("p.b", [r.id], "success"), ("p.errback", [r.id], "failure"),
    ]  # fmt: skip
    # The ids planned are the ids the callbacks will run with: freeze_callbacks gave them in the message.
    assert [p["task_id"] for p in plan] == [embed["callbacks"][0]["options"]["task_id"],
                                            embed["errbacks"][0]["options"]["task_id"]]  # fmt: skip


def test_an_errback_run_inline_is_left_out(app: Celery, sent: list[Any]) -> None:
    t(app, "a").apply_async(link_error=[t(app, "errback").s(), t(app, "b").s()])
    ((task_id, _, embed),) = sent
    plan = plan_of(task_id, embed, lambda sig: sig["task"] == "p.errback")
    assert [s.name for s in plan or ()] == ["p.b"]


def test_a_plan_is_capped(app: Celery, sent: list[Any]) -> None:
    a, b, s = t(app, "a"), t(app, "b"), t(app, "sum")
    chain(a.s(), chord([b.si() for _ in range(MAX_PLAN_STEPS + 200)], s.s())).apply_async()
    plan = plan_of(sent[0][0], sent[0][2])
    assert plan is not None
    assert len(plan) == MAX_PLAN_STEPS
    # It travels: the event with the largest plan stays far below the size the consumer accepts.
    sent_event = event("sent", sent[0][0], plan=plan)
    assert decode(encode(sent_event)).plan == plan


def test_a_plan_of_groups_after_groups_stays_small(app: Celery, sent: list[Any]) -> None:
    # group | group in a chain: every member of the second runs after every member of the first.
    a, b, c = t(app, "a"), t(app, "b"), t(app, "c")
    chain(a.s(), group(b.si() for _ in range(400)), group(c.si() for _ in range(400))).apply_async()
    plan = plan_of(sent[0][0], sent[0][2])
    assert plan is not None
    ids = sum(len(s.after) + len(s.links or ()) + len(s.link_errors or ()) for s in plan)
    assert ids <= MAX_PLAN_IDS
    assert len(encode(event("sent", sent[0][0], plan=plan))) < MAX_EVENT_BYTES // 2


@pytest.mark.parametrize(
    "embed",
    [
        {"chain": "nope"},
        {"chain": [{"subtask_type": "chain", "kwargs": "x"}, 3, None]},
        {"chord": {"subtask_type": "chord", "kwargs": {"header": 5, "body": []}}},
        {"callbacks": [{"options": {"task_id": 7}}], "errbacks": "x"},
    ],
)
def test_bad_shapes_give_no_plan(embed: dict[str, Any]) -> None:
    assert plan_of("t", embed) is None


# -- the store ----------------------------------------------------------------------------------------

T0 = 1_700_000_000.0


def _events() -> list[Event]:
    """Four flows: a chain A-B-C-D whose B fails; a chord whose member M2 fails; a task E that succeeds
    with an errback; a chain X-Y that succeeds (Y runs: the planned row becomes the task)."""
    out: list[Event] = []

    def run(
        task_id: str, ts: float, end: str, root: str, plan: list[PlanStep] | None = None, **kw: Any
    ) -> None:
        common: dict[str, Any] = {"name": f"app.{task_id}", "root_id": root} | kw
        out.append(event("sent", task_id, ts, plan=plan, **common))
        out.append(event("started", task_id, ts + 0.5, hostname="w1", **common))
        out.append(event(end, task_id, ts + 1, hostname="w1", **common))

    def step(task_id: str, *after: str, on: Any = "success", **kw: Any) -> PlanStep:
        return PlanStep(task_id=task_id, name=f"app.{task_id}", after=list(after), on=on, **kw)

    b, c, d = step("B", "A", links=["C"]), step("C", "B", links=["D"]), step("D", "C")
    run("A", T0, "succeeded", "A", [b, c, d], links=["B"])
    run("B", T0 + 2, "failed", "A", [c, d], parent_id="A", links=["C"])
    for member, end in (("M1", "succeeded"), ("M2", "failed")):
        plan = [step("CB", member, on="chord")]
        # One name: a flow rooted at a group is named after whichever member it counts first.
        run(member, T0 + 4, end, "G", plan, name="app.M", group_id="G", chord_id="CB")
    run("E", T0 + 6, "succeeded", "E", [step("EB", "E", on="failure")], link_errors=["EB"])
    run("X", T0 + 8, "succeeded", "X", [step("Y", "X")], links=["Y"])
    run("Y", T0 + 10, "succeeded", "X", parent_id="X")
    return out


EVENTS = _events()
ROOTS = ("A", "G", "E", "X")


def _snapshot(store: SqlStore) -> Any:
    tasks = {t.task_id: asdict(t) for root in ROOTS for t in store.flow_tasks(root)}
    details = {task_id: asdict(store.get_task(task_id)) for task_id in tasks}  # type: ignore[arg-type]
    flows = sorted(
        (asdict(f) for f in store.list_flows(TaskFilter(), 10, None).items), key=lambda f: f["root_id"]
    )
    registry = [asdict(r) for r in store.registry()]
    return tasks, details, flows, registry, store.stats().tasks


def _store() -> SqlStore:
    store = open_store("sqlite:///:memory:")
    assert isinstance(store, SqlStore)
    return store


def _in_order() -> Any:
    store = _store()
    try:
        store.apply(EVENTS)
        return _snapshot(store)
    finally:
        store.close()


EXPECTED = _in_order()


def test_the_store_keeps_the_plan_and_what_never_ran() -> None:
    tasks, details, flows, registry, count = EXPECTED
    assert {k: (v["state"], v["reason"]) for k, v in tasks.items()} == {
        "A": ("SUCCESS", None), "B": ("FAILURE", None),
        "C": ("NOT_RUN", "upstream B failed"), "D": ("NOT_RUN", "upstream B failed"),
        "M1": ("SUCCESS", None), "M2": ("FAILURE", None), "CB": ("NOT_RUN", "upstream M2 failed"),
        "E": ("SUCCESS", None), "EB": ("NOT_RUN", "not needed: upstream E succeeded"),
        "X": ("SUCCESS", None), "Y": ("SUCCESS", None),
    }  # fmt: skip
    assert (details["D"]["name"], details["D"]["events"], details["CB"]["name"]) == ("app.D", [], "app.CB")
    assert {f["root_id"]: (f["state"], f["counts"]) for f in flows} == {
        "A": ("FAILURE", {"SUCCESS": 1, "FAILURE": 1, "NOT_RUN": 2}),
        "G": ("FAILURE", {"SUCCESS": 1, "FAILURE": 1, "NOT_RUN": 1}),
        "E": ("SUCCESS", {"SUCCESS": 1, "NOT_RUN": 1}),
        "X": ("SUCCESS", {"SUCCESS": 2}),
    }  # fmt: skip
    runs = {r["name"]: (r["total"], r["failure_rate"]) for r in registry}
    assert runs["app.C"] == (0, 0.0)
    assert runs["app.B"] == (1, 1.0)
    assert runs["app.M"] == (2, 0.5)
    assert count == 11


def test_planned_steps_before_anything_ran() -> None:
    store = _store()
    try:
        store.apply(EVENTS[:1])  # A's sent
        tasks = {t.task_id: t for t in store.flow_tasks("A")}
        assert {k: (t.state, t.name) for k, t in tasks.items()} == {
            "A": ("PENDING", "app.A"), "B": ("PLANNED", "app.B"), "C": ("PLANNED", "app.C"),
            "D": ("PLANNED", "app.D"),
        }  # fmt: skip
        (flow,) = store.list_flows(TaskFilter(), 10, None).items
        assert (flow.state, flow.counts) == ("PENDING", {"PENDING": 1, "PLANNED": 3})
        assert tasks["C"].links == ["D"]
        assert store.sweep(None, 0) == 4  # retention deletes planned steps with their flow
        assert store.list_flows(TaskFilter(), 10, None).items == []
        assert store.stats().tasks == 0
    finally:
        store.close()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order=st.permutations(range(len(EVENTS))),
    cuts=st.lists(st.integers(min_value=1, max_value=len(EVENTS) - 1), max_size=10),
    duplicates=st.lists(st.integers(min_value=0, max_value=len(EVENTS) - 1), max_size=6),
)
def test_any_arrival_order_gives_the_same_plan(
    order: list[int], cuts: list[int], duplicates: list[int]
) -> None:
    arrival = [EVENTS[i] for i in order] + [EVENTS[i] for i in duplicates]
    bounds = sorted({0, *cuts, len(arrival)})
    store = _store()
    try:
        cursor = 0
        for start, end in itertools.pairwise(bounds):
            changed = store.apply(arrival[start:end])
            items, cursor = store.changes_since(cursor, 1000)
            assert {t.task_id for t in items} == set(changed)
        assert _snapshot(store) == EXPECTED
    finally:
        store.close()


def test_a_refold_keeps_planned_steps() -> None:
    store = _store()
    try:
        store.apply(EVENTS[:4])  # A ran and B was sent: C and D are PLANNED
        before = _snapshot(store)
        store._writing(lambda s, _seq: schedule_refold(s))
        while (batch := refold_batch(store, 2)) is not None and not batch.finished:
            pass
        assert _snapshot(store) == before
        assert {t.task_id: t.state for t in store.flow_tasks("A")} == {
            "A": "SUCCESS", "B": "PENDING", "C": "PLANNED", "D": "PLANNED",
        }  # fmt: skip
    finally:
        store.close()


def test_a_bad_plan_never_breaks_the_store() -> None:
    store = _store()
    try:
        plan = [
            PlanStep(task_id="x" * 300, name="too long an id"),
            PlanStep(task_id="ok", name="bad\x00name", after=["root", "root"], links=["y" * 400]),
            PlanStep(task_id="root", name="the publisher itself"),
            PlanStep(task_id="loop", after=["loop"]),
        ]
        store.apply([event("sent", "root", T0, name="app.root", plan=plan)])
        tasks = {t.task_id: t for t in store.flow_tasks("root")}
        assert set(tasks) == {"root", "ok", "loop"}
        assert (tasks["root"].name, tasks["root"].state) == ("app.root", "PENDING")
        assert (tasks["ok"].name, tasks["ok"].links) == ("bad\ufffdname", ["y" * 255])
        assert tasks["loop"].state == "PLANNED"
    finally:
        store.close()
