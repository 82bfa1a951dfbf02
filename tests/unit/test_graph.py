"""Graphs of every canvas shape from hand-built event sequences, plus bad data (cycles, orphans)."""

from __future__ import annotations

from typing import Any

from tests.support.events import event

from celery_flow.events import Event
from celery_flow.flow.flows import flow_state, summarize_flow, summarize_trace
from celery_flow.flow.fold import fold_task
from celery_flow.flow.graph import build_graph
from celery_flow.flow.model import FlowGraph, TaskDetail


def sent(task_id: str, ts: float, **fields: Any) -> Event:
    """The sent event of `task_id` named proj.<task_id>, in flow "a" unless `root_id` says otherwise."""
    return event("sent", task_id, ts, **{"root_id": "a", "name": f"proj.{task_id}", **fields})


def tasks_of(*events: Event) -> list[TaskDetail]:
    by_task: dict[str, list[Event]] = {}
    for e in events:
        assert e.task_id
        by_task.setdefault(e.task_id, []).append(e)
    return [fold_task(task_id, evs) for task_id, evs in by_task.items()]


def edges(graph: FlowGraph) -> set[tuple[str, str, str]]:
    return {(e.source, e.target, e.kind) for e in graph.edges}


def groups(graph: FlowGraph) -> set[tuple[str, str, tuple[str, ...], str | None]]:
    return {(g.id, g.kind, tuple(sorted(g.members)), g.callback_id) for g in graph.groups}


def test_chain_draws_one_chain_edge_per_step_not_spawn_plus_chain() -> None:
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 1, links=["b"]),
            sent("b", 2, parent_id="a", links=["c"]),
            sent("c", 3, parent_id="b"),
        ),
    )
    assert {n.task_id for n in graph.nodes} == {"a", "b", "c"}
    assert edges(graph) == {("a", "b", "chain"), ("b", "c", "chain")}
    assert graph.groups == []


def test_nested_spawn() -> None:
    graph = build_graph("a", tasks_of(sent("a", 1), sent("b", 2, parent_id="a"), sent("c", 3, parent_id="b")))
    assert edges(graph) == {("a", "b", "spawn"), ("b", "c", "spawn")}


def test_group_container_from_group_id() -> None:
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 1),
            sent("b1", 2, parent_id="a", group_id="g"),
            sent("b2", 2, parent_id="a", group_id="g"),
        ),
    )
    assert groups(graph) == {("g", "group", ("b1", "b2"), None)}
    assert edges(graph) == {("a", "b1", "spawn"), ("a", "b2", "spawn")}


def test_chord_is_a_chord_while_only_sent_with_pending_callback() -> None:
    graph = build_graph(
        "h1",
        tasks_of(
            sent("h1", 1, root_id="h1", group_id="g", chord_id="cb"),
            sent("h2", 1, root_id="h1", group_id="g", chord_id="cb"),
        ),
    )
    nodes = {n.task_id: n for n in graph.nodes}
    assert set(nodes) == {"h1", "h2", "cb"}
    assert nodes["cb"].state == "PENDING"
    assert groups(graph) == {("g", "chord", ("h1", "h2"), "cb")}
    assert edges(graph) == {("h1", "cb", "chord"), ("h2", "cb", "chord")}


def test_planned_steps_are_drawn_in_place_with_their_names() -> None:
    # chain(a, chord([h1, h2], cb), d) with only a sent: the rest as the store gives it (PLANNED rows).
    planned = [
        TaskDetail(task_id="h1", name="proj.h", state="PLANNED", root_id="a", parent_id="a", group_id="g",
                   chord_id="cb"),
        TaskDetail(task_id="h2", name="proj.h", state="PLANNED", root_id="a", parent_id="a", group_id="g",
                   chord_id="cb"),
        TaskDetail(task_id="cb", name="proj.cb", state="PLANNED", root_id="a", links=["d"]),
        TaskDetail(task_id="d", name="proj.d", state="NOT_RUN", root_id="a", parent_id="cb",
                   reason="upstream h2 failed"),
    ]  # fmt: skip
    graph = build_graph("a", [*tasks_of(sent("a", 1, links=["h1", "h2"])), *planned])
    nodes = {n.task_id: n for n in graph.nodes}
    assert {k: (n.name, n.state) for k, n in nodes.items()} == {
        "a": ("proj.a", "PENDING"), "h1": ("proj.h", "PLANNED"), "h2": ("proj.h", "PLANNED"),
        "cb": ("proj.cb", "PLANNED"), "d": ("proj.d", "NOT_RUN"),
    }  # fmt: skip
    assert nodes["d"].reason == "upstream h2 failed"
    assert edges(graph) == {
        ("a", "h1", "chain"), ("a", "h2", "chain"), ("h1", "cb", "chord"), ("h2", "cb", "chord"),
        ("cb", "d", "chain"),
    }  # fmt: skip
    assert groups(graph) == {("g", "chord", ("h1", "h2"), "cb")}
    assert graph.summary.counts == {"PENDING": 1, "PLANNED": 3, "NOT_RUN": 1}


def test_steps_that_never_ran_are_not_on_the_critical_path() -> None:
    # chain(a, b, c, d) whose b failed: c and d never ran, so a -> b decided when the flow finished.
    ran = tasks_of(
        sent("a", 1, links=["b"]), event("succeeded", "a", ts=2),
        sent("b", 3, root_id="a", parent_id="a", links=["c"]), event("failed", "b", ts=4),
    )  # fmt: skip
    never = [
        TaskDetail(task_id="c", name="proj.c", state="NOT_RUN", root_id="a", parent_id="b", links=["d"]),
        TaskDetail(task_id="d", name="proj.d", state="NOT_RUN", root_id="a", parent_id="c"),
    ]
    graph = build_graph("a", [*ran, *never])
    assert graph.critical_path == ["a", "b"]


def test_chord_callback_carrying_the_enclosing_group_id_is_not_a_member() -> None:
    # chain(a, group(b1, b2), chord([c1, c2], d)): d carries group b's group_id (DESIGN.md §7).
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 1, links=["gb"]),
            sent("b1", 2, parent_id="a", group_id="gb"),
            sent("b2", 2, parent_id="a", group_id="gb"),
            sent("c1", 3, parent_id="b2", group_id="gc", chord_id="d"),
            sent("c2", 3, parent_id="b2", group_id="gc", chord_id="d"),
            sent("d", 4, parent_id="c2", group_id="gb"),
        ),
    )
    assert groups(graph) == {("gb", "group", ("b1", "b2"), None), ("gc", "chord", ("c1", "c2"), "d")}
    assert edges(graph) == {
        ("a", "b1", "chain"),
        ("a", "b2", "chain"),
        ("b2", "c1", "spawn"),
        ("b2", "c2", "spawn"),
        ("c1", "d", "chord"),
        ("c2", "d", "chord"),
    }


def test_errback_edge_replaces_spawn() -> None:
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 1, link_errors=["on_err"]),
            event("failed", "a", 2, exception="boom"),
            sent("on_err", 3, parent_id="a"),
        ),
    )
    assert edges(graph) == {("a", "on_err", "errback")}


def test_retry_self_parent_draws_no_self_edge() -> None:
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 1, retries=0),
            event("retried", "a", 2, retries=0),
            sent("a", 3, retries=1, parent_id="a"),
        ),
    )
    assert edges(graph) == set()
    assert [n.state for n in graph.nodes] == ["PENDING"]


def test_cycles_and_missing_parents_neither_hang_nor_crash() -> None:
    graph = build_graph(
        "x",
        tasks_of(
            sent("x", 1, root_id="x", parent_id="y", links=["y"]),
            sent("y", 2, root_id="x", parent_id="x", links=["x"], chord_id="x"),
            sent("z", 3, root_id="x", parent_id="missing", chord_id="z", links=["nowhere"]),
            event("succeeded", "x", 5),
            event("succeeded", "y", 6),
        ),
    )
    assert {n.task_id for n in graph.nodes} == {"x", "y", "z"}
    assert ("x", "y", "chain") in edges(graph)
    assert all(e.source in {"x", "y", "z"} and e.target in {"x", "y", "z"} for e in graph.edges)
    assert len(graph.critical_path) == len(set(graph.critical_path)) <= 3


def test_critical_path_follows_the_dependency_that_finished_last() -> None:
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 0, links=["g"]),
            event("succeeded", "a", 1),
            sent("b1", 1, parent_id="a", group_id="g", chord_id="d"),
            sent("b2", 1, parent_id="a", group_id="g", chord_id="d"),
            event("succeeded", "b1", 2),
            event("succeeded", "b2", 5),
            sent("d", 5, parent_id="b2"),
            event("succeeded", "d", 6),
        ),
    )
    assert graph.critical_path == ["a", "b2", "d"]


def test_critical_path_ends_at_the_chord_callback_even_if_its_trigger_is_stamped_later() -> None:
    # The last header member sends the callback before its own `succeeded` is stamped: a fast
    # callback can finish "before" its trigger. The flow still ended with the callback.
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 0, links=["g"]),
            event("succeeded", "a", 1),
            sent("b1", 1, parent_id="a", group_id="g", chord_id="d"),
            sent("b2", 1, parent_id="a", group_id="g", chord_id="d"),
            event("succeeded", "b1", 2),
            sent("d", 5.0, parent_id="b2"),
            event("succeeded", "d", 5.001),
            event("succeeded", "b2", 5.002),
        ),
    )
    assert graph.critical_path == ["a", "b2", "d"]


def test_flow_state_rules_and_summary() -> None:
    assert flow_state({"SUCCESS": 2, "FAILURE": 1, "STARTED": 1}) == "FAILURE"
    assert flow_state({"SUCCESS": 2, "STARTED": 1}) == "RUNNING"
    assert flow_state({"PENDING": 2}) == "PENDING"
    assert flow_state({"PENDING": 1, "SUCCESS": 1}) == "RUNNING"
    assert flow_state({"SUCCESS": 1, "REVOKED": 1}) == "REVOKED"
    assert flow_state({"SUCCESS": 3}) == "SUCCESS"
    tasks = tasks_of(
        sent("a", 10), event("succeeded", "a", 11), sent("b", 12, parent_id="a"), event("succeeded", "b", 15)
    )
    summary = summarize_flow("a", tasks)
    assert summary.state == "SUCCESS"
    assert summary.counts == {"SUCCESS": 2}
    assert summary.task_count == 2
    assert summary.root_name == "proj.a"
    assert (summary.started_at, summary.finished_at, summary.duration) == (10, 15, 5)
    running = summarize_flow("a", tasks_of(sent("a", 10), event("failed", "a", 11), sent("b", 12)))
    assert running.state == "FAILURE"
    assert running.finished_at is None


def test_graph_summary_counts_tasks_not_the_callback_drawn_ahead_of_its_chord() -> None:
    graph = build_graph(
        "a",
        tasks_of(
            sent("a", 1),
            event("succeeded", "a", 2),
            sent("h1", 3, parent_id="a", group_id="g", chord_id="cb"),
            event("failed", "h1", 4),
            sent("h2", 3, parent_id="a", group_id="g", chord_id="cb"),
        ),
    )
    assert {n.task_id for n in graph.nodes} == {"a", "h1", "h2", "cb"}
    assert graph.summary.state == "FAILURE"
    assert graph.summary.counts == {"SUCCESS": 1, "FAILURE": 1, "PENDING": 1}
    assert graph.summary.task_count == 3
    assert graph.summary.finished_at is None


def test_trace_summary_adds_up_its_flows_by_the_flow_rule() -> None:
    finished = summarize_flow(
        "a",
        tasks_of(
            sent("a", 10),
            event("succeeded", "a", 12),
            sent("b", 11, parent_id="a"),
            event("succeeded", "b", 15),
        ),
    )
    failed = summarize_flow("c", tasks_of(sent("c", 5, root_id="c"), event("failed", "c", 6)))
    rejected = summarize_flow("d", tasks_of(sent("d", 20, root_id="d"), event("rejected", "d", 21)))
    running = summarize_flow("e", tasks_of(sent("e", 30, root_id="e")))

    together = summarize_trace([finished, failed])
    assert (together.state, together.counts, together.task_count) == (
        "FAILURE",
        {"SUCCESS": 2, "FAILURE": 1},
        3,
    )
    assert (together.started_at, together.finished_at, together.duration) == (5, 15, 10)
    assert summarize_trace([finished, rejected]).state == "REJECTED"
    still = summarize_trace([failed, running])
    assert (still.state, still.finished_at, still.duration) == ("FAILURE", None, None)
    assert summarize_trace([]).state == "PENDING"
