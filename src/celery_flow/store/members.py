"""Flows of any size: a group with more members than a threshold is read as one summary, and its members
page by page.

Everything about a big group comes from two partial indexes over the tasks of groups (schema.py
`tasks_group_ts`, `tasks_group_runtime`): counts by state, retried members, the latest finish and the
percentiles are aggregates and ordered walks the engine answers from the index, and only the members
worth a look (failed, lost, retried, running, the slowest few, the last to finish) become rows in
Python. A group's members are the tasks carrying its group id, less its own chord's callback.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from celery_flow.flow.graph import to_node
from celery_flow.flow.model import CollapsedGroup, FlowSummary, MemberPage, Percentiles, TaskDetail, TaskState
from celery_flow.store.connection import Session, in_list
from celery_flow.store.queries import decode_cursor, encode_cursor, flow_tasks
from celery_flow.store.rows import (
    FLOW_SELECT,
    TASK_SELECT,
    FlowRow,
    TaskRow,
    fetch,
    flow_summary,
    task_from_row,
)
from celery_flow.store.schema import STATES

MemberSort = Literal["newest", "slowest"]

# Groups with more members than this are collapsed unless the request says otherwise.
COLLAPSE_DEFAULT = 200
# Members worth a look listed per collapsed group (failed first), and the slowest ones besides.
LISTED = 100
SLOWEST = 5
# Worth a look, in the order they are listed: failures first, then what still runs.
WORTH_STATES = ("FAILURE", "LOST", "REJECTED", "REVOKED", "RETRY", "STARTED", "RECEIVED")
_WORTH_RANK = " ".join(f"WHEN '{state}' THEN {i}" for i, state in enumerate(WORTH_STATES))
_WORTH_SQL = "(state IN ({}) OR retries > 0)".format(", ".join(f"'{state}'" for state in WORTH_STATES))
_MEMBERS = "fnum = ? AND group_id = ? AND task_id <> ?"
# The slowest-first walk takes the members without a runtime last; their cursors carry this runtime.
_NO_RUNTIME = -1.0


@dataclass
class GroupStats:
    """One collapsed group as the store counts it."""

    group_id: str
    callback_id: str | None
    name: str | None
    total: int
    counts: dict[str, int]
    retried: int
    worth: int
    runtime: Percentiles
    queue_wait: Percentiles
    first_seen: float | None
    last_finished: float | None
    listed: list[str] = field(default_factory=list)
    # (parent id, members spawned by it): the 20 parents with the most members.
    parents: list[tuple[str, int]] = field(default_factory=list)

    def collapsed(self) -> CollapsedGroup:
        """The group as the API sends it."""
        return CollapsedGroup(
            id=self.group_id, node_id=f"collapsed:{self.group_id}",
            kind="chord" if self.callback_id else "group", name=self.name, total=self.total,
            counts=self.counts, retried=self.retried, runtime=self.runtime, queue_wait=self.queue_wait,
            first_seen=self.first_seen, last_finished=self.last_finished, listed=list(self.listed),
            unlisted=max(0, self.worth - LISTED),
            callback_id=self.callback_id,
        )  # fmt: skip


@dataclass
class FlowParts:
    """What the graph of a flow is built from: the tasks drawn one by one and the collapsed groups."""

    tasks: list[TaskDetail]
    groups: list[GroupStats]
    # The stored row (exact whatever was collapsed); None when nothing was.
    summary: FlowSummary | None = None
    # Member id -> its collapsed group, for tasks drawn one by one whose parent is a member not listed.
    hidden_parents: dict[str, str] = field(default_factory=dict)


def flow_parts(s: Session, root_id: str, collapse: int) -> FlowParts | None:
    """The tasks of a flow to draw, with each group of more than `collapse` members summarised."""
    flows = fetch(s, FlowRow, FLOW_SELECT + " WHERE root_id = ?", (root_id,))
    if not flows:
        return None
    flow = flows[0]
    big: list[tuple[str, int]] = []
    if flow.task_count > collapse:
        big = [
            (r[0], int(r[1]))
            for r in s.rows(
                "SELECT group_id, COUNT(*) FROM tasks WHERE fnum = ? AND group_id IS NOT NULL "
                "GROUP BY group_id HAVING COUNT(*) > ?",
                (flow.fnum, collapse),
            )
        ]
    if not big:
        every = flow_tasks(s, root_id)
        return FlowParts(every, []) if every else None
    groups = [group_stats(s, flow.fnum, group_id) for group_id, _ in big]
    big_ids = [group_id for group_id, _ in big]
    callbacks = [g.callback_id for g in groups if g.callback_id]
    listed = [task_id for g in groups for task_id in g.listed]
    rows = fetch(
        s,
        TaskRow,
        TASK_SELECT + f" WHERE fnum = ? AND (group_id IS NULL OR group_id NOT IN {in_list(big_ids)})",
        (flow.fnum, *big_ids),
    )
    rows += _rows_by_id(s, flow.fnum, [*callbacks, *listed])
    tasks = {row.task_id: task_from_row(row, TaskDetail) for row in rows}
    hidden = {t.parent_id for t in tasks.values() if t.parent_id and t.parent_id not in tasks}
    hidden_parents: dict[str, str] = {}
    if hidden:
        # Members with a child drawn one by one are listed too (up to LISTED more), so the path from the
        # child back to the root stays whole; the others are drawn as their group.
        found = _rows_by_id(
            s, flow.fnum, sorted(hidden), also=f" AND group_id IN {in_list(big_ids)}", extra=big_ids
        )
        for row in found[:LISTED]:
            tasks[row.task_id] = task_from_row(row, TaskDetail)
            next(g for g in groups if g.group_id == row.group_id).listed.append(row.task_id)
        hidden_parents = {row.task_id: row.group_id or "" for row in found[LISTED:]}
    ordered = sorted(tasks.values(), key=lambda t: (t.sent_at or 0.0, t.task_id))
    return FlowParts(ordered, groups, flow_summary(flow), hidden_parents)


def _rows_by_id(
    s: Session, fnum: int, ids: Sequence[str], also: str = "", extra: Sequence[Any] = ()
) -> list[TaskRow]:
    out: list[TaskRow] = []
    for start in range(0, len(ids), 400):
        chunk = list(ids[start : start + 400])
        out += fetch(
            s,
            TaskRow,
            TASK_SELECT + f" WHERE fnum = ? AND task_id IN {in_list(chunk)}{also}",
            (fnum, *chunk, *extra),
        )
    return out


def _callback(s: Session, fnum: int, group_id: str) -> str | None:
    """The callback of the chord whose header this group is (None: a plain group)."""
    rows = s.rows(
        "SELECT chord_id FROM tasks WHERE fnum = ? AND group_id = ? AND chord_id IS NOT NULL LIMIT 1",
        (fnum, group_id),
    )
    return str(rows[0][0]) if rows else None


def group_stats(s: Session, fnum: int, group_id: str) -> GroupStats:
    """Counts, percentiles, bounds and the members worth a look of one group, from its indexes."""
    callback = _callback(s, fnum, group_id)
    params = (fnum, group_id, callback or "")
    by_state = ", ".join(f"SUM(CASE WHEN state = '{state}' THEN 1 ELSE 0 END)" for state in STATES)
    # One pass over tasks_group_runtime for every count and bound.
    row = s.rows(
        f"SELECT COUNT(*), {by_state}, SUM(CASE WHEN retries > 0 THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {_WORTH_SQL} THEN 1 ELSE 0 END), MAX(finished_at), COUNT(runtime), "
        "COUNT(queue_wait), MIN(parent_id), MAX(parent_id), COUNT(parent_id) "
        f"FROM tasks WHERE {_MEMBERS}",
        params,
    )[0]
    total = int(row[0] or 0)
    counts = {state: int(n) for state, n in zip(STATES, row[1 : 1 + len(STATES)], strict=True) if n}
    retried, worth, last_finished, n_runtime, n_wait, low_parent, high_parent, n_parent = row[
        1 + len(STATES) :
    ]
    first = s.rows(f"SELECT MIN(ts) FROM tasks WHERE {_MEMBERS}", params)[0][0]
    name_rows = s.rows(f"SELECT name FROM tasks WHERE {_MEMBERS} LIMIT 1", params)
    stats = GroupStats(
        group_id=group_id, callback_id=callback, name=name_rows[0][0] if name_rows else None, total=total,
        counts=counts, retried=int(retried or 0), worth=int(worth or 0),
        runtime=_percentiles(s, params, "runtime", int(n_runtime or 0)),
        queue_wait=_percentiles(s, params, "queue_wait", int(n_wait or 0)),
        first_seen=first, last_finished=last_finished,
    )  # fmt: skip
    listed: list[str] = []
    if worth:
        listed = [
            r[0]
            for r in s.rows(
                f"SELECT task_id FROM tasks WHERE {_MEMBERS} AND {_WORTH_SQL} "
                f"ORDER BY CASE state {_WORTH_RANK} ELSE {len(WORTH_STATES)} END, ts, task_id LIMIT {LISTED}",
                params,
            )
        ]
    slowest = s.rows(
        f"SELECT task_id FROM tasks WHERE {_MEMBERS} AND runtime IS NOT NULL "
        f"ORDER BY runtime DESC, task_id DESC LIMIT {SLOWEST}",
        params,
    )
    # The member that finished last: the critical path steps back through it.
    last = (
        s.rows(
            f"SELECT task_id FROM tasks WHERE {_MEMBERS} AND finished_at = ? ORDER BY task_id DESC LIMIT 1",
            (*params, last_finished),
        )
        if last_finished is not None
        else []
    )
    for r in [*slowest, *last]:
        if r[0] not in listed:
            listed.append(r[0])
    stats.listed = listed
    if low_parent is not None and low_parent == high_parent:
        stats.parents = [(str(low_parent), int(n_parent))]
    elif low_parent is not None:
        stats.parents = [
            (str(r[0]), int(r[1]))
            for r in s.rows(
                f"SELECT parent_id, COUNT(*) FROM tasks WHERE {_MEMBERS} AND parent_id IS NOT NULL "
                "GROUP BY parent_id ORDER BY COUNT(*) DESC LIMIT 20",
                params,
            )
        ]
    return stats


def _percentiles(s: Session, params: Sequence[Any], column: str, count: int) -> Percentiles:
    """Nearest-rank p50/p95/p99 and the maximum of a column over the members that have it.

    Each is one walk along the group's index on that column, from the nearer end: p99 of 100,000
    members steps over 1,000 index entries, not 99,000.
    """
    if not count:
        return Percentiles()

    def at(rank: int) -> float | None:
        # rank is 1-based from the smallest value.
        order, offset = ("ASC", rank - 1) if rank <= count - rank else ("DESC", count - rank)
        rows = s.rows(
            f"SELECT {column} FROM tasks WHERE {_MEMBERS} AND {column} IS NOT NULL "
            f"ORDER BY {column} {order} LIMIT 1 OFFSET {int(offset)}",
            params,
        )
        return float(rows[0][0]) if rows else None

    def rank(fraction: float) -> int:
        return max(1, min(count, math.ceil(fraction * count)))

    return Percentiles(p50=at(rank(0.5)), p95=at(rank(0.95)), p99=at(rank(0.99)), max=at(count))


def members_page(
    s: Session,
    root_id: str,
    group_id: str,
    state: TaskState | None,
    sort: MemberSort,
    limit: int,
    cursor: str | None,
) -> MemberPage | None:
    """One keyset page of a group's members, newest or slowest first; None for an unknown flow or group."""
    fnums = s.rows("SELECT fnum FROM flows WHERE root_id = ?", (root_id,))
    if not fnums:
        return None
    fnum = int(fnums[0][0])
    callback = _callback(s, fnum, group_id)
    base = [_MEMBERS]
    params: list[Any] = [fnum, group_id, callback or ""]
    if not s.rows(f"SELECT 1 FROM tasks WHERE {_MEMBERS} LIMIT 1", params):
        return None
    if state is not None:
        base.append("state = ?")
        params.append(state)
    after = decode_cursor(cursor) if cursor else None
    rows: list[TaskRow]
    if sort == "newest":
        where = list(base)
        extra: list[Any] = []
        if after is not None:
            where.append("(ts, task_id) < (?, ?)")
            extra = list(after)
        rows = _select(s, where, [*params, *extra], "ts DESC, task_id DESC", limit + 1)
        key = [(r.ts, r.task_id) for r in rows]
    else:
        rows = []
        if after is None or after[0] != _NO_RUNTIME:
            where = [*base, "runtime IS NOT NULL"]
            extra = []
            if after is not None:
                where.append("(runtime, task_id) < (?, ?)")
                extra = list(after)
            rows = _select(s, where, [*params, *extra], "runtime DESC, task_id DESC", limit + 1)
        if len(rows) <= limit:
            where = [*base, "runtime IS NULL"]
            extra = []
            if after is not None and after[0] == _NO_RUNTIME:
                where.append("task_id < ?")
                extra = [after[1]]
            rows += _select(s, where, [*params, *extra], "task_id DESC", limit + 1 - len(rows))
        key = [(r.runtime if r.runtime is not None else _NO_RUNTIME, r.task_id) for r in rows]
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(*key[limit - 1]) if more else None
    return MemberPage(items=[to_node(task_from_row(r, TaskDetail)) for r in rows], next_cursor=next_cursor)


def _select(s: Session, where: list[str], params: list[Any], order: str, limit: int) -> list[TaskRow]:
    sql = TASK_SELECT + " WHERE " + " AND ".join(where) + f" ORDER BY {order} LIMIT ?"
    return fetch(s, TaskRow, sql, [*params, limit])


def group_counts(s: Session, root_id: str, group_ids: Sequence[str]) -> dict[str, GroupStats]:
    """The current figures of these groups of one flow (live updates of collapsed nodes)."""
    fnums = s.rows("SELECT fnum FROM flows WHERE root_id = ?", (root_id,))
    if not fnums:
        return {}
    return {group_id: group_stats(s, int(fnums[0][0]), group_id) for group_id in group_ids}
