"""The tasks of one root workflow as a graph: nodes, typed edges, group/chord containers, critical path,
and the flow's summary row (state, counts, duration: flow/flows.py).

Everything is derived from fields known at publish time (`parent_id`, `links`, `link_errors`,
`group_id`, `chord_id`), so a canvas has its final shape as soon as its tasks are *sent*. Steps not sent
yet come from the store as PLANNED (or NOT_RUN) tasks with the same lineage fields, named, read from the
`plan` of an earlier task's `sent` (store/plan.py); only a chord callback that no plan named (events
from a tracking library without plans) is drawn as a pending placeholder without a name.

Bad data (cycles, missing parents, a task that names itself) never hangs or crashes this module: it only
looks edges up in dictionaries, and the one walk (critical path) keeps a visited set.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields

from celery_flow.flow.flows import summarize_flow
from celery_flow.flow.model import (
    CollapsedGroup,
    EdgeKind,
    FlowGraph,
    FlowSummary,
    GraphEdge,
    GraphGroup,
    GraphNode,
    TaskSummary,
)

_NEVER_RAN = frozenset({"PLANNED", "NOT_RUN"})
_SUMMARY_FIELDS = tuple(f.name for f in fields(TaskSummary))


def to_node(task: TaskSummary) -> GraphNode:
    """A graph node carrying the task's summary fields (and its timeline when the task has one)."""
    node = GraphNode(**{name: getattr(task, name) for name in _SUMMARY_FIELDS})
    segments = getattr(task, "segments", None)
    if segments:
        node.segments = list(segments)
    return node


def build_graph(root_id: str, tasks: Iterable[TaskSummary]) -> FlowGraph:
    """The graph of one root workflow from its tasks (any order; duplicates by id are merged)."""
    nodes: dict[str, GraphNode] = {}
    for task in tasks:
        nodes[task.task_id] = to_node(task)
    # Before the placeholders below: a chord callback not sent yet is drawn, but is not a task yet.
    summary = summarize_flow(root_id, nodes.values())

    # A chord callback is the `chord_id` target of its header members. It is *not* a member of any
    # group it carries the group_id of (Celery gives it the enclosing group's id, DESIGN.md §7).
    chord_members: dict[str, list[str]] = {}
    for node in nodes.values():
        if node.chord_id and node.chord_id != node.task_id:
            chord_members.setdefault(node.chord_id, []).append(node.task_id)
    for callback_id in chord_members:
        if callback_id not in nodes:
            # Not sent yet and no plan named it (an older tracking library): a pending placeholder.
            nodes[callback_id] = GraphNode(task_id=callback_id, name=None, state="PENDING", root_id=root_id)

    group_members: dict[str, list[str]] = {}
    for node in nodes.values():
        if node.group_id and node.task_id not in chord_members:
            group_members.setdefault(node.group_id, []).append(node.task_id)

    edges: list[GraphEdge] = []
    connected: set[tuple[str, str]] = set()

    def add(source: str, target: str, kind: EdgeKind) -> None:
        if source == target or (source, target) in connected:
            return
        if source not in nodes or target not in nodes:
            return
        connected.add((source, target))
        edges.append(GraphEdge(source=source, target=target, kind=kind))

    def targets(link: str) -> Sequence[str]:
        # A link names a task, or a group (a chain into a group links to the group's id).
        if link in nodes:
            return (link,)
        return group_members.get(link, ())

    ordered = sorted(nodes.values(), key=_node_order)
    for node in ordered:
        for link in node.links:
            for target in targets(link):
                add(node.task_id, target, "chain")
    for callback_id, members in chord_members.items():
        for member in sorted(members, key=lambda t: _node_order(nodes[t])):
            add(member, callback_id, "chord")
    for node in ordered:
        for link in node.link_errors:
            for target in targets(link):
                add(node.task_id, target, "errback")
    # Spawn last: a chain successor, a chord callback or an errback also has the predecessor as its
    # parent; one edge of the more specific kind is drawn, not spawn+chain.
    for node in ordered:
        parent = node.parent_id
        if parent and parent != node.task_id:
            add(parent, node.task_id, "spawn")

    groups: list[GraphGroup] = []
    chord_group_ids: set[str] = set()
    for callback_id, members in chord_members.items():
        member_groups = {nodes[m].group_id for m in members}
        header_group = member_groups.pop() if len(member_groups) == 1 else None
        group_id = header_group or f"chord:{callback_id}"
        if header_group:
            chord_group_ids.add(header_group)
        groups.append(
            GraphGroup(
                id=group_id,
                kind="chord",
                members=sorted(members, key=lambda t: _node_order(nodes[t])),
                callback_id=callback_id,
            )
        )
    for group_id, members in group_members.items():
        if group_id in chord_group_ids:
            continue
        groups.append(
            GraphGroup(
                id=group_id,
                kind="group",
                members=sorted(members, key=lambda t: _node_order(nodes[t])),
            )
        )
    groups.sort(key=lambda g: (g.kind, g.id))

    return FlowGraph(
        root_id=root_id,
        nodes=ordered,
        edges=edges,
        groups=groups,
        summary=summary,
        critical_path=critical_path(nodes, edges),
    )


def collapsed_graph(
    root_id: str,
    tasks: Iterable[TaskSummary],
    collapsed: Sequence[CollapsedGroup],
    parents: Mapping[str, Sequence[tuple[str, int]]],
    hidden_parents: Mapping[str, str],
    summary: FlowSummary,
) -> FlowGraph:
    """The graph of a flow whose big groups come summarised: `tasks` holds every other task and each
    group's `listed` members; the members not sent are drawn as the group's `node_id`.

    `parents` gives each group's (parent id, members it spawned); `hidden_parents` maps members not sent
    to their group where a task that is sent names one as its parent; `summary` is the flow's stored row.
    The critical path stays exact: it steps back through the member that finished last, always listed.
    """
    graph = build_graph(root_id, tasks)
    graph.summary = summary
    graph.collapsed = list(collapsed)
    nodes = {node.task_id: node for node in graph.nodes}
    known = {group.id for group in graph.groups}
    for group in collapsed:
        if group.id not in known:
            graph.groups.append(
                GraphGroup(id=group.id, kind=group.kind, members=[], callback_id=group.callback_id)
            )
        hidden = group.total - len(group.listed)
        if hidden <= 0:
            continue
        listed_parents: dict[str, int] = {}
        for member in group.listed:
            parent = nodes[member].parent_id if member in nodes else None
            if parent:
                listed_parents[parent] = listed_parents.get(parent, 0) + 1
        for parent, count in parents.get(group.id, ()):
            count -= listed_parents.get(parent, 0)
            if count > 0 and parent in nodes:
                # A chain into a group links to the group's id: one chain edge, not spawn.
                kind: EdgeKind = "chain" if group.id in nodes[parent].links else "spawn"
                graph.edges.append(GraphEdge(source=parent, target=group.node_id, kind=kind, count=count))
        if group.callback_id in nodes:
            graph.edges.append(
                GraphEdge(source=group.node_id, target=group.callback_id, kind="chord", count=hidden)
            )
    by_id = {group.id: group for group in collapsed}
    for node in graph.nodes:
        group_id = hidden_parents.get(node.parent_id or "")
        if group_id in by_id:
            graph.edges.append(GraphEdge(source=by_id[group_id].node_id, target=node.task_id, kind="spawn"))
    graph.groups.sort(key=lambda g: (g.kind, g.id))
    return graph


def critical_path(nodes: dict[str, GraphNode], edges: Sequence[GraphEdge]) -> list[str]:
    """Task ids, earliest first, of the chain of dependencies that decided when the flow finished.

    Start at the leaf (a task nothing waits on) that finished last and repeatedly step back to the
    predecessor (any edge kind) that finished last. Starting from a leaf matters: a chord member's
    `succeeded` is stamped after it has already sent the callback, so a fast callback can "finish" a
    few microseconds before the member that triggered it. Bounded by the node count and a visited set,
    so cycles cannot loop.
    """
    # A step that is only planned or never ran decided nothing about when the flow finished.
    nodes = {task_id: node for task_id, node in nodes.items() if node.state not in _NEVER_RAN}
    if not nodes:
        return []
    predecessors: dict[str, list[str]] = {}
    sources: set[str] = set()
    for edge in edges:
        if edge.source not in nodes or edge.target not in nodes:
            continue
        predecessors.setdefault(edge.target, []).append(edge.source)
        if edge.source != edge.target:
            sources.add(edge.source)
    leaves = [n for n in nodes.values() if n.task_id not in sources] or list(nodes.values())
    current: str | None = max(leaves, key=lambda n: (_end_time(n), n.task_id)).task_id
    path: list[str] = []
    visited: set[str] = set()
    while current is not None and current not in visited and len(path) < len(nodes):
        visited.add(current)
        path.append(current)
        candidates = [p for p in predecessors.get(current, ()) if p not in visited]
        current = max(candidates, key=lambda t: (_end_time(nodes[t]), t)) if candidates else None
    path.reverse()
    return path


def _end_time(node: TaskSummary) -> float:
    for value in (node.finished_at, node.updated_at, node.started_at, node.received_at, node.sent_at):
        if value is not None:
            return value
    return float("-inf")


def _node_order(node: TaskSummary) -> tuple[float, str]:
    """Stable display order: by when the task was first seen, then id."""
    first = node.sent_at
    if first is None:
        first = node.received_at if node.received_at is not None else node.started_at
    return (first if first is not None else float("inf"), node.task_id)
