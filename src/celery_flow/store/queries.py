"""Reads: keyset-paged task and flow lists, a task's detail, a flow's tasks, traces, the registry,
workers, and the change feed live push tails.

Every list is a walk over one `(filter column, ts, id)` index, newest first; the cursor is the (ts, id)
of the last row served, so a page costs a few index probes however deep it is.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, TypeVar

import msgspec

from celery_flow.flow.fold import fold_task
from celery_flow.flow.model import (
    TERMINAL_STATES,
    FlowSummary,
    Page,
    RegisteredTask,
    TaskDetail,
    TaskSummary,
    TraceView,
    WorkerInfo,
)
from celery_flow.store import lost, search
from celery_flow.store.base import StoreStats, TaskFilter
from celery_flow.store.connection import Session, chunks, meta_value
from celery_flow.store.failures import cluster_size
from celery_flow.store.plan import STEP_STATES
from celery_flow.store.rows import (
    FLOW_SELECT,
    NAME_STATS_SELECT,
    REGISTRY_SELECT,
    TASK_SELECT,
    WORKER_SELECT,
    FlowRow,
    NameStatsRow,
    RegistryRow,
    TaskRow,
    WorkerRow,
    fetch,
    fetch_in,
    flow_summary,
    json_decoder,
    json_encoder,
    state_counts,
    task_from_row,
)
from celery_flow.store.schema import STATES
from celery_flow.store.write import event_decoder

R = TypeVar("R")
K = TypeVar("K", bound=tuple[Any, ...])

# Runtimes per task name the registry's p50/p95 are computed over (the most recent ones).
PERCENTILE_WINDOW = 1000
TRACE_LIMIT = 5000
# Task names free text `q` may match at most (one index range each).
MAX_Q_NAMES = 50
# Task names per statement of the registry's runtime query: under SQLite's 500 terms of a compound SELECT.
RUNTIME_NAMES = 400

_cursor_decoder = msgspec.json.Decoder(tuple[float, str])
# The flow number of a root id, for filters on tasks (NULL, hence no rows, for an unknown root).
_FNUM_OF = "(SELECT fnum FROM flows WHERE root_id = ?)"


def encode_cursor(ts: float, ident: str) -> str:
    """An opaque keyset cursor: the (ts, id) of the last row of a page."""
    return base64.urlsafe_b64encode(json_encoder.encode((ts, ident))).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (ts, id) in a cursor; ValueError (the API's 422) for anything this store did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValueError("malformed cursor: pass back the `next_cursor` of the previous page") from None


# -- lists ----------------------------------------------------------------------------------------


def _task_key(row: TaskRow) -> tuple[float, str]:
    return row.ts, row.task_id


def _flow_key(row: FlowRow) -> tuple[float, str]:
    return row.ts, row.root_id


def list_tasks(
    s: Session, filt: TaskFilter, limit: int, cursor: str | None, also: tuple[str, list[Any]] | None = None
) -> Page[TaskSummary]:
    """A page of tasks; `also` is one more condition with its parameters (the `stuck` filter)."""
    where: list[str] = [also[0]] if also else []
    params: list[Any] = list(also[1]) if also else []
    for column, value in (
        ("state", filt.state), ("name", filt.name), ("hostname", filt.worker),
        ("fingerprint", filt.fingerprint), ("queue", filt.queue),
    ):  # fmt: skip
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filt.root_id is not None:
        where.append(f"fnum = {_FNUM_OF}")
        params.append(filt.root_id)
    if filt.trace_id is not None:
        where.append("fnum IN (SELECT fnum FROM flows WHERE trace_id = ?) AND trace_id = ?")
        params.extend([filt.trace_id, filt.trace_id])
    alternatives = _common_filters(s, filt, "task_id", "name", where, params)
    rows = _search(s, TaskRow, TASK_SELECT, "task_id", where, params, alternatives, limit, cursor, _task_key)
    return _paged(rows, limit, task_from_row, _task_key)


def list_flows(s: Session, filt: TaskFilter, limit: int, cursor: str | None) -> Page[FlowSummary]:
    where: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("state", filt.state), ("root_name", filt.name), ("root_id", filt.root_id),
        ("trace_id", filt.trace_id),
    ):  # fmt: skip
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if filt.worker is not None:
        # `|| ''` keeps the engine on the flow index (a flow's few tasks) instead of walking every task
        # of that worker once per flow.
        where.append("EXISTS (SELECT 1 FROM tasks t WHERE t.fnum = flows.fnum AND (t.hostname || '') = ?)")
        params.append(filt.worker)
    alternatives = _common_filters(s, filt, "root_id", "root_name", where, params)
    rows = _search(s, FlowRow, FLOW_SELECT, "root_id", where, params, alternatives, limit, cursor, _flow_key)
    return _paged(rows, limit, flow_summary, _flow_key)


def _common_filters(
    s: Session, filt: TaskFilter, id_column: str, name_column: str, where: list[str], params: list[Any]
) -> list[tuple[str, list[Any]]]:
    """Add the time filters; return the alternatives free text `q` allows (one query each)."""
    if filt.since is not None:
        where.append("ts >= ?")
        params.append(filt.since)
    if filt.until is not None:
        where.append("ts < ?")
        params.append(filt.until)
    # No id or name holds a NUL (and PostgreSQL refuses one in a parameter).
    text = (filt.q or "").replace("\x00", "").strip()
    if not text:
        return []
    # Ids by prefix (a primary-key range); names by case-insensitive substring, resolved first against
    # the small set of known names. Each alternative is its own index range, merged by the caller:
    # one `OR` would make the engine sort every match of a popular name.
    needle = text.lower()
    names = [r[0] for r in s.rows("SELECT name FROM name_stats") if needle in r[0].lower()]
    alternatives = [(f"{id_column} >= ? AND {id_column} < ?", [text, text + "\U0010ffff"])]
    alternatives += [(f"{name_column} = ?", [name]) for name in sorted(names)[:MAX_Q_NAMES]]
    # Words and key:value pairs inside arguments, results and errors (store/search.py).
    inside = search.condition(s, text, "tasks" if id_column == "task_id" else "flows")
    if inside is not None:
        alternatives.append(inside)
    return alternatives


def _search(
    s: Session,
    row_type: type[K],
    select: str,
    id_column: str,
    where: list[str],
    params: list[Any],
    alternatives: list[tuple[str, list[Any]]],
    limit: int,
    cursor: str | None,
    key: Callable[[K], tuple[float, str]],
) -> list[K]:
    """One keyset page, or the merge of one page per alternative (newest first, no duplicates)."""
    if not alternatives:
        return _page(s, row_type, select, id_column, where, params, limit, cursor)
    merged: dict[str, K] = {}
    for condition, values in alternatives:
        for row in _page(
            s, row_type, select, id_column, [*where, condition], [*params, *values], limit, cursor
        ):
            merged[key(row)[1]] = row
    return sorted(merged.values(), key=key, reverse=True)[: limit + 1]


def _page(
    s: Session,
    row_type: type[K],
    select: str,
    id_column: str,
    where: list[str],
    params: list[Any],
    limit: int,
    cursor: str | None,
) -> list[K]:
    if cursor:
        ts, ident = decode_cursor(cursor)
        where = [*where, f"(ts, {id_column}) < (?, ?)"]
        params = [*params, ts, ident]
    sql = select
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY ts DESC, {id_column} DESC LIMIT ?"
    return fetch(s, row_type, sql, [*params, limit + 1])


def _paged(
    rows: list[K], limit: int, convert: Callable[[K], R], key: Callable[[K], tuple[float, str]]
) -> Page[R]:
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(*key(rows[-1])) if more and rows else None
    return Page(items=[convert(r) for r in rows], next_cursor=next_cursor)


# -- one task, one flow, one trace ----------------------------------------------------------------


def get_task(s: Session, task_id: str) -> TaskDetail | None:
    stored = fetch(s, TaskRow, TASK_SELECT + " WHERE task_id = ?", (task_id,))
    if not stored:
        return None
    rows = s.rows("SELECT data FROM events WHERE num = ?", (stored[0].num,))
    task: TaskDetail
    if rows:
        task = fold_task(task_id, [event_decoder.decode(r[0]) for r in rows])
        lost.overlay(task, stored[0])
    elif stored[0].state in STEP_STATES:
        # A planned (or never run) step has no events: its row is all there is.
        task = task_from_row(stored[0], TaskDetail)
    else:
        return None
    task.children = [
        r[0]
        for r in s.rows(
            f"SELECT task_id FROM tasks WHERE fnum = {_FNUM_OF} AND parent_id = ? ORDER BY ts, task_id",
            (task.root_id or task_id, task_id),
        )
    ]
    if task.fingerprint is not None:
        task.cluster_size = cluster_size(s, task.fingerprint)
    return task


def flow_tasks(s: Session, root_id: str) -> list[TaskDetail]:
    rows = fetch(s, TaskRow, TASK_SELECT + f" WHERE fnum = {_FNUM_OF} ORDER BY ts, task_id", (root_id,))
    return [task_from_row(r, TaskDetail) for r in rows]


def trace(s: Session, trace_id: str) -> TraceView | None:
    flows = fetch(
        s,
        FlowRow,
        FLOW_SELECT + " WHERE trace_id = ? ORDER BY ts DESC, root_id DESC LIMIT ?",
        (trace_id, TRACE_LIMIT),
    )
    tasks = sorted(
        fetch_in(
            s,
            TaskRow,
            TASK_SELECT + " WHERE fnum IN {} AND trace_id = ?",
            [f.fnum for f in flows],
            (trace_id,),
        ),
        key=_task_key,
        reverse=True,
    )[:TRACE_LIMIT]
    if not flows and not tasks:
        return None
    return TraceView(
        trace_id=trace_id, flows=[flow_summary(r) for r in flows], tasks=[task_from_row(r) for r in tasks]
    )


# -- registry, workers ----------------------------------------------------------------------------


def _recent_runtimes(s: Session, names: Sequence[str]) -> dict[str, list[float]]:
    """The most recent PERCENTILE_WINDOW runtimes of each name, in ascending order.

    One statement per RUNTIME_NAMES names: a UNION ALL of one index range per name, each tagged with
    the name's position (SQLite has no LATERAL join to do this from `name_stats`).
    """
    out: dict[str, list[float]] = {name: [] for name in names}
    for chunk in chunks(names, RUNTIME_NAMES):
        sql = " UNION ALL ".join(
            f"SELECT {i} AS k, runtime FROM (SELECT runtime FROM tasks WHERE name = ? "
            f"AND runtime IS NOT NULL ORDER BY ts DESC LIMIT {PERCENTILE_WINDOW}) AS r{i}"
            for i in range(len(chunk))
        )
        for position, rows in groupby(s.rows(sql, chunk), key=itemgetter(0)):
            out[chunk[position]].extend(map(itemgetter(1), rows))
    for runtimes in out.values():
        runtimes.sort()
    return out


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values), math.ceil(fraction * len(sorted_values))) - 1)
    return sorted_values[rank]


def registry(s: Session) -> list[RegisteredTask]:
    """Every task name counted or announced: counts by state, failure rate, p50/p95 of recent runtimes."""
    stats = {row.name: row for row in fetch(s, NameStatsRow, NAME_STATS_SELECT)}
    announced = {row.name: row for row in fetch(s, RegistryRow, REGISTRY_SELECT)}
    counts = {
        name: {state: n for state, n in zip(STATES, state_counts(row), strict=True) if n}
        for name, row in stats.items()
    }
    runtimes = _recent_runtimes(s, sorted(name for name, by_state in counts.items() if by_state))
    out: list[RegisteredTask] = []
    for name in sorted(set(stats) | set(announced)):
        by_state = counts.get(name, {})
        # Planned and never-run steps are not runs.
        runs = {state: n for state, n in by_state.items() if state not in STEP_STATES}
        finished = sum(runs.get(state, 0) for state in TERMINAL_STATES)
        recent = runtimes.get(name, [])
        info = announced.get(name)
        out.append(
            RegisteredTask(
                name=name, counts=by_state, total=sum(runs.values()),
                failure_rate=runs.get("FAILURE", 0) / finished if finished else 0.0,
                p50=_percentile(recent, 0.5), p95=_percentile(recent, 0.95),
                signature=info.signature if info else None, doc=info.doc if info else None,
                workers=list(json_decoder.decode(info.workers)) if info else [],
            )
        )  # fmt: skip
    return out


def workers(s: Session, heartbeat_interval: float) -> list[WorkerInfo]:
    """Every worker seen; offline once it said so or missed 3 heartbeats: the rule that makes its running
    tasks LOST (store/lost.py)."""
    rows = fetch(s, WorkerRow, WORKER_SELECT + " ORDER BY hostname")
    running: dict[str, int] = dict(
        # Through the partial index of received and started tasks; only started ones run.
        s.rows(
            f"SELECT hostname, COUNT(*) FROM tasks WHERE {lost.RUNNING_SQL} AND state = 'STARTED' "
            "GROUP BY hostname"
        )
    )
    now = time.time()
    out = []
    for w in rows:
        info = dict(json_decoder.decode(w.info))
        pool, concurrency, queues = info.get("pool"), info.get("concurrency"), info.get("queues")
        interval = w.heartbeat_interval or heartbeat_interval
        online = lost.last_heard(w) is not None and not lost.is_gone(w, heartbeat_interval, now)
        out.append(
            WorkerInfo(
                hostname=w.hostname, status="online" if online else "offline",
                last_heartbeat=w.last_heartbeat, heartbeat_interval=interval, online_since=w.online_since,
                pid=w.pid,
                tasks_run=int(w.tasks_run),
                registered=list(json_decoder.decode(w.registered)), info=info,
                pool=pool if isinstance(pool, str) else None,
                concurrency=concurrency if isinstance(concurrency, int) and not isinstance(concurrency, bool)
                else None,
                queues=[q for q in queues if isinstance(q, str)] if isinstance(queues, list) else [],
                running=int(running.get(w.hostname, 0)), failed=int(w.tasks_failed), offline_at=w.offline_at,
            )
        )  # fmt: skip
    return out


# -- change feed, counters ------------------------------------------------------------------------


def changes_since(s: Session, cursor: int, limit: int) -> tuple[list[TaskSummary], int]:
    rows = fetch(s, TaskRow, TASK_SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?", (int(cursor), limit))
    if not rows:
        return [], cursor
    return [task_from_row(r) for r in rows], int(rows[-1].seq)


def head_cursor(s: Session) -> int:
    return meta_value(s, "seq")


def stats(s: Session) -> StoreStats:
    meta = {r[0]: int(r[1]) for r in s.rows("SELECT key, value FROM meta")}
    counters = {r[0]: int(r[1]) for r in s.rows("SELECT name, value FROM counters")}
    lag = max(0, meta.get("seq", 0) - meta.get("search_seq", 0))
    return StoreStats(
        tasks=meta.get("tasks", 0), events=meta.get("events", 0), counters=counters, search_lag=lag
    )
