"""The store logic shared by both engines: folding batches, keeping flows current, keyset queries.

The engines (sqlite.py, postgresql.py) only open connections and run one transaction at a time; every
statement here is written once with `?` placeholders in the common subset of both SQL dialects.

How `apply()` stays correct and fast:
- Writers are serialized (SQLite: BEGIN IMMEDIATE; PostgreSQL: the `meta.seq` row is locked first thing),
  so the change counter `seq` grows in commit order and a reader tailing `seq > cursor` never skips a row
  that commits late, and two consumers never fold the same task from different partial event sets.
- Duplicate event ids are dropped before anything is written (idempotence). Each task touched by a
  batch is re-folded once from its full event set (flow/fold.py): the events already stored plus the new
  ones, so arrival order never matters.
- Flow rows, per-name counts and per-worker counts are updated from the difference between each task's
  old and new row, in the same transaction, so no query ever aggregates the tasks table.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from celery_flow.events import TASK_EVENT_TYPES, WORKER_EVENT_TYPES, Event, encode
from celery_flow.flow.flows import first_seen, flow_state
from celery_flow.flow.fold import fold_task
from celery_flow.flow.model import (
    TERMINAL_STATES,
    FlowSummary,
    Page,
    RegisteredTask,
    Segment,
    TaskDetail,
    TaskSummary,
    TraceView,
    WorkerInfo,
)
from celery_flow.settings import env_value
from celery_flow.store.base import StoreStats, TaskFilter
from celery_flow.store.schema import (
    FLOW_COLUMNS,
    STATE_COLUMNS,
    STATES,
    TASK_COLUMNS,
    WORKER_COLUMNS,
    upsert,
)

R = TypeVar("R")
Row = tuple[Any, ...]

# Rows per `IN (...)` list: far below SQLite's 32766-variable limit and PostgreSQL's 65535.
CHUNK = 900
# Runtimes per task name the registry's p50/p95 are computed over (the most recent ones).
PERCENTILE_WINDOW = 1000
# Default worker heartbeat interval when a worker does not announce its own; a worker is offline once
# no heartbeat came for 2 intervals plus this margin.
DEFAULT_HEARTBEAT_INTERVAL = 30.0
HEARTBEAT_MARGIN = 5.0
# A worker claiming a longer interval is still declared offline after 2 hours of silence.
MAX_HEARTBEAT_INTERVAL = 3600.0
SWEEP_BATCH = 5000
# Seconds of deleting per sweep() call at most (see sweep()).
SWEEP_BUDGET = 2.0
TRACE_LIMIT = 5000
# Tasks whose event sets a store keeps in memory to skip re-reading them on the next fold.
RECENT_TASKS = 4096
# Task names free text `q` may match at most (one index range each).
MAX_Q_NAMES = 50

_event_decoder = msgspec.json.Decoder(Event)
_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()
_cursor_decoder = msgspec.json.Decoder(tuple[float, str])

_TASK_SELECT = "SELECT " + ", ".join(TASK_COLUMNS) + " FROM tasks"
_FLOW_SELECT = "SELECT " + ", ".join(FLOW_COLUMNS) + " FROM flows"
# Columns that appear in secondary indexes (besides seq, which changes on every write anyway).
_TASK_INDEXED = frozenset({"name", "state", "fnum", "hostname", "ts", "runtime", "queue_wait"})
# Never reassigned: a task keeps its number (the SQLite rowid) for life.
_TASK_FIXED = frozenset({"num"})
_FLOW_INDEXED = frozenset({"root_name", "state", "trace_id", "ts"})
_T_STATE, _T_ROOT, _T_HOST, _T_NUM = (TASK_COLUMNS.index(c) for c in ("state", "root_id", "hostname", "num"))
_T_TS, _T_SEQ = TASK_COLUMNS.index("ts"), TASK_COLUMNS.index("seq")
_F_FNUM, _F_TS = FLOW_COLUMNS.index("fnum"), FLOW_COLUMNS.index("ts")
# The flow number of a root id, for filters on tasks (NULL, hence no rows, for an unknown root).
_FNUM_OF = "(SELECT fnum FROM flows WHERE root_id = ?)"
_NAME_STATS_UPSERT = upsert("name_stats", ("name", *STATE_COLUMNS.values()), "name")
_WORKER_UPSERT = upsert("workers", WORKER_COLUMNS, "hostname")
_REGISTRY_UPSERT = upsert("registry", ("name", "signature", "doc", "workers"), "name")
_STATE_INDEX = {state: i for i, state in enumerate(STATES)}
_COUNT_SQL = ", ".join(STATE_COLUMNS.values())


class Session(Protocol):
    """One connection inside one transaction (writes) or in autocommit (reads)."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; return the number of rows it changed."""
        ...

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


def encode_cursor(ts: float, ident: str) -> str:
    """An opaque keyset cursor: the (ts, id) of the last row of a page."""
    return base64.urlsafe_b64encode(_json_encoder.encode((ts, ident))).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (ts, id) in a cursor; ValueError (the API's 422) for anything this store did not write."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return _cursor_decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValueError("malformed cursor: pass back the `next_cursor` of the previous page") from None


def _in(values: Sequence[Any]) -> str:
    return "(" + ", ".join("?" for _ in values) + ")"


def _chunks(values: Sequence[R], size: int = CHUNK) -> Iterator[Sequence[R]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def select_in(session: Session, sql: str, values: Sequence[Any], extra: Sequence[Any] = ()) -> list[Row]:
    """Run `sql` (with one `{}` standing for an `IN (...)` list) over `values` in chunks."""
    out: list[Row] = []
    for chunk in _chunks(values):
        out.extend(session.rows(sql.format(_in(chunk)), [*chunk, *extra]))
    return out


def _percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values), math.ceil(fraction * len(sorted_values))) - 1)
    return sorted_values[rank]


@dataclass
class _FlowRow:
    root_id: str
    root_name: str | None = None
    trace_id: str | None = None
    counts: list[int] = field(default_factory=lambda: [0] * len(STATES))
    task_count: int = 0
    started_at: float | None = None
    last_finished: float | None = None
    updated_at: float | None = None
    fnum: int = 0

    @classmethod
    def from_row(cls, row: Row) -> _FlowRow:
        n = len(STATES)
        return cls(
            root_id=row[0], root_name=row[1], trace_id=row[3], counts=list(row[4 : 4 + n]),
            task_count=row[4 + n], started_at=row[5 + n], last_finished=row[6 + n], updated_at=row[7 + n],
            fnum=row[_F_FNUM],
        )  # fmt: skip

    def counts_dict(self) -> dict[str, int]:
        return {state: count for state, count in zip(STATES, self.counts, strict=True) if count}

    def to_row(self, seq: int) -> Row:
        state = flow_state(self.counts_dict())
        ts = self.started_at if self.started_at is not None else (self.updated_at or 0.0)
        return (
            self.root_id, self.root_name, state, self.trace_id, *self.counts, self.task_count,
            self.started_at, self.last_finished, self.updated_at, ts, seq, self.fnum,
        )  # fmt: skip


def _flow_summary(row: Row) -> FlowSummary:
    flow = _FlowRow.from_row(row)
    counts = flow.counts_dict()
    done = flow.task_count > 0 and all(state in TERMINAL_STATES for state in counts)
    finished = flow.last_finished if done else None
    duration = finished - flow.started_at if finished is not None and flow.started_at is not None else None
    return FlowSummary(
        root_id=flow.root_id,
        root_name=flow.root_name,
        state=row[2],
        counts=counts,
        task_count=flow.task_count,
        started_at=flow.started_at,
        finished_at=finished,
        duration=max(duration, 0.0) if duration is not None else None,
        trace_id=flow.trace_id,
        updated_at=flow.updated_at,
    )


def _task_extra(task: TaskDetail) -> str:
    extra: dict[str, Any] = {}
    if task.links:
        extra["links"] = task.links
    if task.link_errors:
        extra["link_errors"] = task.link_errors
    if task.durations:
        extra["durations"] = task.durations
    if task.segments:
        extra["segments"] = [(s.kind, s.start, s.end) for s in task.segments]
    if task.pid is not None:
        extra["pid"] = task.pid
    if task.eta is not None:
        extra["eta"] = task.eta
    if task.expires is not None:
        extra["expires"] = task.expires
    return _json_encoder.encode(extra).decode("utf-8")


def _task_row(task: TaskDetail, seq: int, num: int, fnum: int) -> Row:
    ts = first_seen(task)
    return (
        task.task_id, task.name, task.state, task.root_id, task.parent_id, task.group_id, task.chord_id,
        task.trace_id, task.hostname, task.queue, task.retries, task.sent_at, task.received_at,
        task.started_at, task.finished_at, task.runtime, task.exception, task.updated_at,
        ts if ts is not None else 0.0, seq, _task_extra(task), num, fnum, task.queue_wait,
    )  # fmt: skip


def _task_from_row(row: Row, cls: type[TaskSummary] = TaskSummary) -> Any:
    extra: dict[str, Any] = _json_decoder.decode(row[20]) if row[20] and row[20] != "{}" else {}
    task = cls(
        task_id=row[0], name=row[1], state=row[2], root_id=row[3], parent_id=row[4], group_id=row[5],
        chord_id=row[6], trace_id=row[7], hostname=row[8], queue=row[9], retries=row[10], sent_at=row[11],
        received_at=row[12], started_at=row[13], finished_at=row[14], runtime=row[15], exception=row[16],
        links=extra.get("links", []), link_errors=extra.get("link_errors", []),
        durations=extra.get("durations", {}), updated_at=row[17], queue_wait=row[23],
    )  # fmt: skip
    if isinstance(task, TaskDetail):
        task.segments = [Segment(kind=k, start=s, end=e) for k, s, e in extra.get("segments", ())]
        task.pid = extra.get("pid")
        task.eta = extra.get("eta")
        task.expires = extra.get("expires")
    return task


def write_rows(
    session: Session,
    table: str,
    columns: tuple[str, ...],
    indexed: frozenset[str],
    rows: Sequence[Row],
    old_rows: Mapping[str, Row],
    fixed: frozenset[str] = frozenset(),
) -> None:
    """Insert new rows; update existing ones, assigning only the indexed columns whose value changed.

    An UPDATE rewrites every index that holds an assigned column, changed or not, so assigning only what
    moved keeps a task's usual lifecycle update (state, seq, times) off the name/root/trace/ts indexes.
    Writers are serialized, so "new" (not in `old_rows`) cannot race with another insert.
    """
    inserts: list[Row] = []
    updates: dict[tuple[int, ...], list[Row]] = {}
    indexed_positions = [i for i, column in enumerate(columns) if column in indexed]
    for row in rows:
        before = old_rows.get(row[0])
        if before is None:
            inserts.append(row)
        else:
            changed = tuple(i for i in indexed_positions if row[i] != before[i])
            updates.setdefault(changed, []).append(row)
    if inserts:
        session.many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {_in(columns)}", inserts)
    plain = [i for i, column in enumerate(columns) if i > 0 and column not in indexed | fixed]
    for changed, group in updates.items():
        assigned = plain + list(changed)
        sets = ", ".join(f"{columns[i]} = ?" for i in assigned)
        session.many(
            f"UPDATE {table} SET {sets} WHERE {columns[0]} = ?",
            [(*tuple(row[i] for i in assigned), row[0]) for row in group],
        )


@dataclass
class _TaskChange:
    """A task's row before and after one batch, for the incremental counts."""

    old: Row | None  # the full tasks row (TASK_COLUMNS)
    new: TaskDetail


class SqlStore(ABC):
    """Everything of the Store protocol, over an engine that provides sessions."""

    dialect: str = ""
    # Appended to the first statement of a write transaction: locks the change counter row (PostgreSQL).
    lock_suffix: str = ""

    def __init__(self) -> None:
        self.heartbeat_interval = float(
            env_value("HEARTBEAT_INTERVAL", None, DEFAULT_HEARTBEAT_INTERVAL, float)
        )
        # The event sets of recently folded tasks, keyed by task id with the `seq` they were written at.
        # A task whose stored row still carries that seq has exactly these events (nobody, in this process
        # or another, changed it since), so its next fold skips reading and decoding them again.
        self._recent: dict[str, tuple[int, list[Event]]] = {}
        self._recent_lock = threading.Lock()

    # -- engine hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _read(self) -> AbstractContextManager[Session]:
        """A session for reads (autocommit: each statement sees the latest commit)."""

    @abstractmethod
    def _write(self) -> AbstractContextManager[Session]:
        """A session inside a write transaction, committed when the block exits normally."""

    def _reading(self, call: Callable[[Session], R]) -> R:
        with self._read() as session:
            return call(session)

    def _writing(self, call: Callable[[Session], R]) -> R:
        with self._write() as session:
            return call(session)

    # -- writes -----------------------------------------------------------------------------------

    def apply(self, events: Sequence[Event], counters: Mapping[str, int] | None = None) -> list[str]:
        task_events: dict[str, Event] = {}
        worker_events: list[Event] = []
        for event in events:
            if event.type in TASK_EVENT_TYPES:
                if event.task_id:
                    task_events.setdefault(event.id, event)
            elif event.type in WORKER_EVENT_TYPES and event.hostname:
                worker_events.append(event)
        counter_rows = sorted((name, int(value)) for name, value in (counters or {}).items() if value)
        if not task_events and not worker_events and not counter_rows:
            return []
        try:
            return self._writing(lambda s: self._apply(s, task_events, worker_events, counter_rows))
        except BaseException:
            # Entries written by a transaction that rolled back must never match a later row.
            with self._recent_lock:
                self._recent.clear()
            raise

    def _apply(
        self,
        session: Session,
        task_events: dict[str, Event],
        worker_events: list[Event],
        counter_rows: list[tuple[str, int]],
    ) -> list[str]:
        seq = int(session.rows("SELECT value FROM meta WHERE key = 'seq'" + self.lock_suffix)[0][0])
        changed: list[str] = []
        host_runs: dict[str, int] = {}
        if task_events:
            changed = self._apply_tasks(session, task_events, seq, host_runs)
            if changed:
                session.run("UPDATE meta SET value = ? WHERE key = 'seq'", (seq + len(changed),))
        if worker_events or host_runs:
            self._apply_workers(session, worker_events, host_runs)
        if counter_rows:
            session.many(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                counter_rows,
            )
        return changed

    def _apply_tasks(
        self, session: Session, task_events: dict[str, Event], seq: int, host_runs: dict[str, int]
    ) -> list[str]:
        by_task: dict[str, list[Event]] = {}
        for event in task_events.values():
            by_task.setdefault(event.task_id or "", []).append(event)
        old_rows = {
            row[0]: row for row in select_in(session, _TASK_SELECT + " WHERE task_id IN {}", sorted(by_task))
        }
        fresh = list(task_events.values())
        if old_rows:
            # The stored events of known tasks: what the re-fold needs, and which ids are duplicates.
            known: set[str] = set()
            owner: dict[int, str] = {}
            with self._recent_lock:
                for task_id, row in old_rows.items():
                    hit = self._recent.get(task_id)
                    if hit is not None and hit[0] == row[_T_SEQ]:
                        by_task[task_id].extend(hit[1])
                        known.update(e.id for e in hit[1])
                    else:
                        owner[row[_T_NUM]] = task_id
            for num, event_id, data in select_in(
                session, "SELECT num, id, data FROM events WHERE num IN {}", sorted(owner)
            ):
                known.add(event_id)
                by_task[owner[num]].append(_event_decoder.decode(data))
            if known:
                fresh = [e for e in fresh if e.id not in known]
        task_ids = sorted({e.task_id or "" for e in fresh})
        if not task_ids:
            return []
        last_num = int(session.rows("SELECT value FROM meta WHERE key = 'task_num'")[0][0])
        nums: dict[str, int] = {}
        for task_id in task_ids:
            old = old_rows.get(task_id)
            if old is None:
                last_num += 1
                nums[task_id] = last_num
            else:
                nums[task_id] = int(old[_T_NUM])
        last_event = int(session.rows("SELECT value FROM meta WHERE key = 'event_num'")[0][0])
        session.many(
            "INSERT INTO events (enum, num, id, ts, data) VALUES (?, ?, ?, ?, ?)",
            [(last_event + i, nums[e.task_id or ""], e.id, e.ts, encode(e)) for i, e in enumerate(fresh, 1)],
        )
        changes = [
            _TaskChange(old_rows.get(task_id), fold_task(task_id, by_task[task_id])) for task_id in task_ids
        ]
        flows = self._update_flows(session, changes, seq + len(task_ids))
        rows = [
            _task_row(c.new, seq + offset, nums[c.new.task_id], flows[c.new.root_id or c.new.task_id].fnum)
            for offset, c in enumerate(changes, start=1)
        ]
        write_rows(session, "tasks", TASK_COLUMNS, _TASK_INDEXED, rows, old_rows, fixed=_TASK_FIXED)
        self._remember(task_ids, by_task, seq)
        self._update_name_stats(session, changes)
        for change in changes:
            old, new = change.old, change.new
            if old is not None and old[_T_STATE] in TERMINAL_STATES and old[_T_HOST]:
                host_runs[old[_T_HOST]] = host_runs.get(old[_T_HOST], 0) - 1
            if new.state in TERMINAL_STATES and new.hostname:
                host_runs[new.hostname] = host_runs.get(new.hostname, 0) + 1
        added = sum(1 for task_id in task_ids if task_id not in old_rows)
        session.many(
            "UPDATE meta SET value = value + ? WHERE key = ?", [(added, "tasks"), (len(fresh), "events")]
        )
        session.many(
            "UPDATE meta SET value = ? WHERE key = ?",
            [(last_num, "task_num"), (last_event + len(fresh), "event_num")],
        )
        return task_ids

    def _remember(self, task_ids: list[str], by_task: dict[str, list[Event]], seq: int) -> None:
        with self._recent_lock:
            recent = self._recent
            for offset, task_id in enumerate(task_ids, start=1):
                recent.pop(task_id, None)  # re-insert: the dict's order is least recently written first
                recent[task_id] = (seq + offset, list({e.id: e for e in by_task[task_id]}.values()))
            while len(recent) > RECENT_TASKS:
                del recent[next(iter(recent))]

    def _update_flows(self, session: Session, changes: list[_TaskChange], seq: int) -> dict[str, _FlowRow]:
        """Apply the tasks' changes to their flow rows (numbering new flows); return the flows by root."""
        roots = sorted(
            {c.new.root_id or c.new.task_id for c in changes} | {c.old[_T_ROOT] for c in changes if c.old}
        )
        old_rows = {row[0]: row for row in select_in(session, _FLOW_SELECT + " WHERE root_id IN {}", roots)}
        flows = {root: _FlowRow.from_row(row) for root, row in old_rows.items()}
        last_flow = first_flow = int(session.rows("SELECT value FROM meta WHERE key = 'flow_num'")[0][0])
        for change in changes:
            old, task = change.old, change.new
            if old is not None and old[_T_ROOT] in flows:
                flow = flows[old[_T_ROOT]]
                flow.counts[_STATE_INDEX[old[_T_STATE]]] -= 1
                flow.task_count -= 1
            root = task.root_id or task.task_id
            if root not in flows:
                last_flow += 1
                flows[root] = _FlowRow(root_id=root, fnum=last_flow)
            flow = flows[root]
            flow.counts[_STATE_INDEX[task.state]] += 1
            flow.task_count += 1
            seen = first_seen(task)
            if seen is not None and (flow.started_at is None or seen < flow.started_at):
                flow.started_at = seen
            if task.finished_at is not None and (
                flow.last_finished is None or task.finished_at > flow.last_finished
            ):
                flow.last_finished = task.finished_at
            if task.updated_at is not None and (flow.updated_at is None or task.updated_at > flow.updated_at):
                flow.updated_at = task.updated_at
            if task.task_id == root:
                flow.root_name = task.name or flow.root_name
                flow.trace_id = task.trace_id or flow.trace_id
            else:
                if flow.root_name is None and task.group_id == root and task.parent_id is None:
                    # A group or chord applied outside a task is rooted at its group id (no task has
                    # that id): name the flow after its top-level members (not the chord callback,
                    # whose parent is a member) so the list never shows a blank row.
                    flow.root_name = task.name
                if flow.trace_id is None:
                    flow.trace_id = task.trace_id
        self._save_flows(session, flows.values(), seq, old_rows)
        if last_flow != first_flow:
            session.run("UPDATE meta SET value = ? WHERE key = 'flow_num'", (last_flow,))
        return flows

    def _save_flows(
        self, session: Session, flows: Iterable[_FlowRow], seq: int, old_rows: Mapping[str, Row]
    ) -> None:
        keep = [flow.to_row(seq) for flow in flows if flow.task_count > 0]
        gone = sorted(flow.root_id for flow in flows if flow.task_count <= 0 and flow.root_id in old_rows)
        write_rows(session, "flows", FLOW_COLUMNS, _FLOW_INDEXED, keep, old_rows)
        for chunk in _chunks(gone):
            session.run(f"DELETE FROM flows WHERE root_id IN {_in(chunk)}", chunk)

    def _update_name_stats(self, session: Session, changes: list[_TaskChange]) -> None:
        deltas: dict[str, list[int]] = {}
        for change in changes:
            old, task = change.old, change.new
            if old is not None and old[1]:
                deltas.setdefault(old[1], [0] * len(STATES))[_STATE_INDEX[old[2]]] -= 1
            if task.name:
                deltas.setdefault(task.name, [0] * len(STATES))[_STATE_INDEX[task.state]] += 1
        self._add_name_stats(session, deltas)

    def _add_name_stats(self, session: Session, deltas: dict[str, list[int]]) -> None:
        deltas = {name: delta for name, delta in deltas.items() if any(delta)}
        if not deltas:
            return
        names = sorted(deltas)
        current = {
            row[0]: list(row[1:])
            for row in select_in(
                session, f"SELECT name, {_COUNT_SQL} FROM name_stats WHERE name IN {{}}", names
            )
        }
        rows = []
        for name in names:
            counts = current.get(name, [0] * len(STATES))
            rows.append((name, *(max(0, a + b) for a, b in zip(counts, deltas[name], strict=True))))
        session.many(_NAME_STATS_UPSERT, rows)

    def _apply_workers(self, session: Session, events: list[Event], host_runs: dict[str, int]) -> None:
        hosts = sorted({e.hostname for e in events if e.hostname} | set(host_runs))
        workers: dict[str, list[Any]] = {
            row[0]: list(row)
            for row in select_in(
                session, "SELECT " + ", ".join(WORKER_COLUMNS) + " FROM workers WHERE hostname IN {}", hosts
            )
        }
        registry: dict[str, tuple[str | None, str | None, set[str]]] = {}
        for host in hosts:
            workers.setdefault(host, [host, None, None, None, None, None, 0, "[]", "{}"])
        for event in sorted(events, key=lambda e: e.ts):
            w = workers[event.hostname or ""]
            # hostname, online_since, last_heartbeat, offline_at, interval, pid, tasks_run, registered, info
            if event.type == "worker.offline":
                w[3] = max(w[3] or event.ts, event.ts)
                continue
            w[2] = max(w[2] or event.ts, event.ts)
            if event.pid is not None:
                w[5] = event.pid
            info = event.info or {}
            interval = info.get("heartbeat_interval", info.get("interval"))
            if isinstance(interval, (int, float)) and interval > 0:
                w[4] = min(float(interval), MAX_HEARTBEAT_INTERVAL)
            if event.type == "worker.online" and (w[1] is None or event.ts >= w[1]):
                w[1] = event.ts
                if event.tasks is not None:
                    w[7] = _json_encoder.encode(sorted(t.name for t in event.tasks)).decode()
                    for info_task in event.tasks:
                        signature, doc, hosts_of = registry.get(info_task.name, (None, None, set()))
                        registry[info_task.name] = (
                            info_task.signature or signature,
                            info_task.doc or doc,
                            hosts_of | {event.hostname or ""},
                        )
                if event.info:
                    w[8] = _json_encoder.encode(event.info).decode()
        for host, delta in host_runs.items():
            workers[host][6] = max(0, int(workers[host][6]) + delta)
        session.many(_WORKER_UPSERT, [tuple(workers[host]) for host in hosts])
        if registry:
            names = sorted(registry)
            known = {
                row[0]: row
                for row in select_in(
                    session, "SELECT name, signature, doc, workers FROM registry WHERE name IN {}", names
                )
            }
            rows = []
            for name in names:
                signature, doc, hosts_of = registry[name]
                old = known.get(name)
                if old is not None:
                    signature = signature or old[1]
                    doc = doc or old[2]
                    hosts_of = hosts_of | set(_json_decoder.decode(old[3]))
                rows.append((name, signature, doc, _json_encoder.encode(sorted(hosts_of)).decode()))
            session.many(_REGISTRY_UPSERT, rows)

    # -- retention --------------------------------------------------------------------------------

    def sweep(self, ttl: float | None, max_tasks: int | None, budget: float = SWEEP_BUDGET) -> int:
        """Delete the oldest tasks (by first-seen time) beyond `ttl` seconds / `max_tasks`.

        Works in batches of SWEEP_BATCH tasks, each its own short transaction, and returns after about
        `budget` seconds even if more is due, so ingest in the same process (the consumer calls this
        between batches) never stalls behind a large backlog; the next call goes on where this stopped.
        """
        deleted = 0
        cutoff = time.time() - ttl if ttl is not None and ttl > 0 else None
        if cutoff is None and max_tasks is None:
            return 0
        stop = time.monotonic() + budget
        while True:
            count = self._writing(lambda s: self._sweep_batch(s, cutoff, max_tasks))
            deleted += count
            if count < SWEEP_BATCH or time.monotonic() >= stop:
                return deleted

    def _sweep_batch(self, session: Session, cutoff: float | None, max_tasks: int | None) -> int:
        session.rows("SELECT value FROM meta WHERE key = 'seq'" + self.lock_suffix)
        ids: list[str] = []
        if cutoff is not None:
            ids = [
                r[0]
                for r in session.rows(
                    "SELECT task_id FROM tasks WHERE ts < ? ORDER BY ts, task_id LIMIT ?",
                    (cutoff, SWEEP_BATCH),
                )
            ]
        if not ids and max_tasks is not None:
            total = int(session.rows("SELECT value FROM meta WHERE key = 'tasks'")[0][0])
            excess = total - max_tasks
            if excess > 0:
                ids = [
                    r[0]
                    for r in session.rows(
                        "SELECT task_id FROM tasks ORDER BY ts, task_id LIMIT ?", (min(excess, SWEEP_BATCH),)
                    )
                ]
        if ids:
            self._delete_tasks(session, ids)
        return len(ids)

    def _delete_tasks(self, session: Session, ids: list[str]) -> None:
        old = select_in(
            session, "SELECT task_id, name, state, root_id, num FROM tasks WHERE task_id IN {}", ids
        )
        nums = sorted(row[4] for row in old)
        events = 0
        for chunk in _chunks(nums):
            events += session.run(f"DELETE FROM events WHERE num IN {_in(chunk)}", chunk)
            session.run(f"DELETE FROM tasks WHERE num IN {_in(chunk)}", chunk)
        deltas: dict[str, list[int]] = {}
        for _, name, state, _root, _num in old:
            if name:
                deltas.setdefault(name, [0] * len(STATES))[_STATE_INDEX[state]] -= 1
        self._add_name_stats(session, deltas)
        # The flows that lost tasks: recount them from what is left (an indexed range per flow).
        roots = sorted({row[3] for row in old})
        old_rows = {row[0]: row for row in select_in(session, _FLOW_SELECT + " WHERE root_id IN {}", roots)}
        flows = {root: _FlowRow.from_row(row) for root, row in old_rows.items()}
        for flow in flows.values():
            flow.counts = [0] * len(STATES)
            flow.task_count = 0
        by_fnum = {flow.fnum: flow for flow in flows.values()}
        for fnum, state, count, started, finished in select_in(
            session,
            "SELECT fnum, state, COUNT(*), MIN(ts), MAX(finished_at) FROM tasks WHERE fnum IN {} "
            "GROUP BY fnum, state",
            sorted(by_fnum),
        ):
            flow = by_fnum[fnum]
            flow.counts[_STATE_INDEX[state]] += int(count)
            flow.task_count += int(count)
            if flow.task_count == int(count):
                flow.started_at, flow.last_finished = started, finished
            else:
                flow.started_at = min(flow.started_at or started, started)
                if finished is not None:
                    flow.last_finished = max(flow.last_finished or finished, finished)
        seq = int(session.rows("SELECT value FROM meta WHERE key = 'seq'")[0][0])
        self._save_flows(session, flows.values(), seq, old_rows)
        session.many(
            "UPDATE meta SET value = value - ? WHERE key = ?", [(len(old), "tasks"), (events, "events")]
        )

    # -- reads ------------------------------------------------------------------------------------

    def get_task(self, task_id: str) -> TaskDetail | None:
        def read(s: Session) -> TaskDetail | None:
            rows = s.rows(
                "SELECT data FROM events WHERE num = (SELECT num FROM tasks WHERE task_id = ?)", (task_id,)
            )
            if not rows:
                return None
            task = fold_task(task_id, [_event_decoder.decode(r[0]) for r in rows])
            task.children = [
                r[0]
                for r in s.rows(
                    f"SELECT task_id FROM tasks WHERE fnum = {_FNUM_OF} AND parent_id = ? "
                    "ORDER BY ts, task_id",
                    (task.root_id or task_id, task_id),
                )
            ]
            return task

        return self._reading(read)

    def list_tasks(self, filt: TaskFilter, limit: int, cursor: str | None) -> Page[TaskSummary]:
        def read(s: Session) -> Page[TaskSummary]:
            where: list[str] = []
            params: list[Any] = []
            for column, value in (
                ("state", filt.state), ("name", filt.name), ("hostname", filt.worker),
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
            alternatives = self._common_filters(s, filt, "task_id", "name", where, params)
            key: Callable[[Row], tuple[float, str]] = lambda r: (r[_T_TS], r[0])  # noqa: E731
            rows = self._search(s, _TASK_SELECT, "task_id", where, params, alternatives, limit, cursor, key)
            return self._paged(rows, limit, _task_from_row, key)

        return self._reading(read)

    def list_flows(self, filt: TaskFilter, limit: int, cursor: str | None) -> Page[FlowSummary]:
        def read(s: Session) -> Page[FlowSummary]:
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
                # `|| ''` keeps the engine on the flow index (a flow's few tasks) instead of walking
                # every task of that worker once per flow.
                where.append(
                    "EXISTS (SELECT 1 FROM tasks t WHERE t.fnum = flows.fnum AND (t.hostname || '') = ?)"
                )
                params.append(filt.worker)
            alternatives = self._common_filters(s, filt, "root_id", "root_name", where, params)
            key: Callable[[Row], tuple[float, str]] = lambda r: (r[_F_TS], r[0])  # noqa: E731
            rows = self._search(s, _FLOW_SELECT, "root_id", where, params, alternatives, limit, cursor, key)
            return self._paged(rows, limit, _flow_summary, key)

        return self._reading(read)

    def _common_filters(
        self,
        s: Session,
        filt: TaskFilter,
        id_column: str,
        name_column: str,
        where: list[str],
        params: list[Any],
    ) -> list[tuple[str, list[Any]]]:
        """Add the time filters; return the alternatives free text `q` allows (one query each)."""
        if filt.since is not None:
            where.append("ts >= ?")
            params.append(filt.since)
        if filt.until is not None:
            where.append("ts < ?")
            params.append(filt.until)
        text = (filt.q or "").strip()
        if not text:
            return []
        # Ids by prefix (a primary-key range); names by case-insensitive substring, resolved first against
        # the small set of known names. Each alternative is its own index range, merged by the caller:
        # one `OR` would make the engine sort every match of a popular name.
        needle = text.lower()
        names = [r[0] for r in s.rows("SELECT name FROM name_stats") if needle in r[0].lower()]
        alternatives = [(f"{id_column} >= ? AND {id_column} < ?", [text, text + "\U0010ffff"])]
        alternatives += [(f"{name_column} = ?", [name]) for name in sorted(names)[:MAX_Q_NAMES]]
        return alternatives

    def _search(
        self,
        s: Session,
        select: str,
        id_column: str,
        where: list[str],
        params: list[Any],
        alternatives: list[tuple[str, list[Any]]],
        limit: int,
        cursor: str | None,
        key: Callable[[Row], tuple[float, str]],
    ) -> list[Row]:
        """One keyset page, or the merge of one page per alternative (newest first, no duplicates)."""
        if not alternatives:
            return self._page(s, select, id_column, where, params, limit, cursor)
        merged: dict[Any, Row] = {}
        for condition, values in alternatives:
            for row in self._page(
                s, select, id_column, [*where, condition], [*params, *values], limit, cursor
            ):
                merged[row[0]] = row
        return sorted(merged.values(), key=key, reverse=True)[: limit + 1]

    @staticmethod
    def _page(
        s: Session,
        select: str,
        id_column: str,
        where: list[str],
        params: list[Any],
        limit: int,
        cursor: str | None,
    ) -> list[Row]:
        if cursor:
            ts, ident = decode_cursor(cursor)
            where = [*where, f"(ts, {id_column}) < (?, ?)"]
            params = [*params, ts, ident]
        sql = select
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY ts DESC, {id_column} DESC LIMIT ?"
        return s.rows(sql, [*params, limit + 1])

    @staticmethod
    def _paged(
        rows: list[Row], limit: int, convert: Callable[[Row], R], key: Callable[[Row], tuple[float, str]]
    ) -> Page[R]:
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(*key(rows[-1])) if more and rows else None
        return Page(items=[convert(r) for r in rows], next_cursor=next_cursor)

    def flow_tasks(self, root_id: str) -> list[TaskDetail]:
        rows = self._reading(
            lambda s: s.rows(_TASK_SELECT + f" WHERE fnum = {_FNUM_OF} ORDER BY ts, task_id", (root_id,))
        )
        return [_task_from_row(r, TaskDetail) for r in rows]

    def trace(self, trace_id: str) -> TraceView | None:
        def read(s: Session) -> TraceView | None:
            flows = s.rows(
                _FLOW_SELECT + " WHERE trace_id = ? ORDER BY ts DESC, root_id DESC LIMIT ?",
                (trace_id, TRACE_LIMIT),
            )
            fnums = [row[_F_FNUM] for row in flows]
            tasks = sorted(
                select_in(s, _TASK_SELECT + " WHERE fnum IN {} AND trace_id = ?", fnums, (trace_id,)),
                key=lambda r: (r[_T_TS], r[0]),
                reverse=True,
            )[:TRACE_LIMIT]
            if not flows and not tasks:
                return None
            return TraceView(
                trace_id=trace_id,
                flows=[_flow_summary(r) for r in flows],
                tasks=[_task_from_row(r) for r in tasks],
            )

        return self._reading(read)

    def registry(self) -> list[RegisteredTask]:
        def read(s: Session) -> list[RegisteredTask]:
            stats = {r[0]: r[1:] for r in s.rows(f"SELECT name, {_COUNT_SQL} FROM name_stats")}
            announced = {r[0]: r[1:] for r in s.rows("SELECT name, signature, doc, workers FROM registry")}
            out: list[RegisteredTask] = []
            for name in sorted(set(stats) | set(announced)):
                counts = {st: int(n) for st, n in zip(STATES, stats.get(name, ()), strict=False) if n}
                total = sum(counts.values())
                finished = sum(counts.get(st, 0) for st in TERMINAL_STATES)
                failed = counts.get("FAILURE", 0)
                runtimes: list[float] = []
                if total:
                    runtimes = sorted(
                        r[0]
                        for r in s.rows(
                            "SELECT runtime FROM tasks WHERE name = ? AND runtime IS NOT NULL "
                            "ORDER BY ts DESC LIMIT ?",
                            (name, PERCENTILE_WINDOW),
                        )
                    )
                signature, doc, workers = announced.get(name, (None, None, "[]"))
                out.append(
                    RegisteredTask(
                        name=name, counts=counts, total=total,
                        failure_rate=failed / finished if finished else 0.0,
                        p50=_percentile(runtimes, 0.5), p95=_percentile(runtimes, 0.95),
                        signature=signature, doc=doc, workers=list(_json_decoder.decode(workers)),
                    )
                )  # fmt: skip
            return out

        return self._reading(read)

    def workers(self) -> list[WorkerInfo]:
        rows = self._reading(
            lambda s: s.rows("SELECT " + ", ".join(WORKER_COLUMNS) + " FROM workers ORDER BY hostname")
        )
        now = time.time()
        out = []
        for host, online_since, heartbeat, offline_at, interval, pid, runs, registered, info in rows:
            alive = max((t for t in (online_since, heartbeat) if t is not None), default=None)
            window = 2 * (interval or self.heartbeat_interval) + HEARTBEAT_MARGIN
            gone = offline_at is not None and (alive is None or offline_at >= alive)
            online = not gone and alive is not None and now - alive <= window
            out.append(
                WorkerInfo(
                    hostname=host, status="online" if online else "offline", last_heartbeat=heartbeat,
                    online_since=online_since, pid=pid, tasks_run=int(runs),
                    registered=list(_json_decoder.decode(registered)), info=dict(_json_decoder.decode(info)),
                )
            )  # fmt: skip
        return out

    def changes_since(self, cursor: int, limit: int = 500) -> tuple[list[TaskSummary], int]:
        rows = self._reading(
            lambda s: s.rows(_TASK_SELECT + " WHERE seq > ? ORDER BY seq LIMIT ?", (int(cursor), limit))
        )
        if not rows:
            return [], cursor
        return [_task_from_row(r) for r in rows], int(rows[-1][19])

    def head_cursor(self) -> int:
        """The current change counter: a new live poller starts here (server/live.py looks for it)."""
        return int(self._reading(lambda s: s.rows("SELECT value FROM meta WHERE key = 'seq'"))[0][0])

    def stats(self) -> StoreStats:
        def read(s: Session) -> StoreStats:
            meta = {r[0]: int(r[1]) for r in s.rows("SELECT key, value FROM meta")}
            counters = {r[0]: int(r[1]) for r in s.rows("SELECT name, value FROM counters")}
            return StoreStats(tasks=meta.get("tasks", 0), events=meta.get("events", 0), counters=counters)

        return self._reading(read)

    def ping(self) -> None:
        self._reading(lambda s: s.rows("SELECT 1"))
