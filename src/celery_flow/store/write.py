"""The write path: a batch of events folded into task rows, with flows, per-name counts and workers kept
current in the same transaction.

- Duplicate event ids are dropped before anything is written (idempotence). Each task a batch touches
  is re-folded once from its full event set (flow/fold.py): the events already stored plus the new
  ones, so arrival order never matters.
- Flow rows (flow/flows.py's FlowTally), per-name counts, per-worker counts, failure clusters
  (store/failures.py) and the overview's counts (store/stats.py) move by the difference
  between each task's old and new row, so no query ever aggregates the tasks table.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter

import msgspec

from celery_flow.events import TASK_EVENT_TYPES, WORKER_EVENT_TYPES, Event, encode
from celery_flow.flow.fold import fold_task
from celery_flow.flow.model import TERMINAL_STATES, TaskDetail
from celery_flow.store import lost, schedules, search, stats
from celery_flow.store.connection import Row, Session, chunks, in_list, meta_value, select_in
from celery_flow.store.failures import ClusterMoves
from celery_flow.store.plan import plan_changes
from celery_flow.store.rows import (
    FLOW_SELECT,
    NAME_STATS_SELECT,
    REGISTRY_SELECT,
    TASK_SELECT,
    WORKER_SELECT,
    FlowRecord,
    FlowRow,
    NameStatsRow,
    RegistryRow,
    TaskRow,
    WorkerRow,
    fetch_in,
    json_decoder,
    json_encoder,
    retry_records,
    state_counts,
    task_from_row,
    task_row,
)
from celery_flow.store.schema import STATES, upsert
from celery_flow.store.stats import StatMoves

# Tasks whose event sets a store keeps in memory to skip re-reading them on the next fold.
RECENT_TASKS = 4096
# A worker claiming a longer heartbeat interval is still declared offline after 2 hours of silence.
MAX_HEARTBEAT_INTERVAL = 3600.0

event_decoder = msgspec.json.Decoder(Event)

# Columns that appear in secondary indexes (besides seq, which changes on every write anyway).
_TASK_INDEXED = frozenset({
    "name", "state", "fnum", "hostname", "ts", "runtime", "queue_wait", "group_id", "retries", "finished_at",
    "chord_id", "parent_id",
})  # fmt: skip
# Never reassigned: a task keeps its number (the SQLite rowid) for life.
_TASK_FIXED = frozenset({"num"})
_FLOW_INDEXED = frozenset({"root_name", "state", "trace_id", "ts"})
_NAME_STATS_UPSERT = upsert("name_stats", NameStatsRow._fields, "name")
_WORKER_UPSERT = upsert("workers", WorkerRow._fields, "hostname")
_REGISTRY_UPSERT = upsert("registry", RegistryRow._fields, "name")
# A state's position in schema.STATES: its place in a list of counts.
STATE_INDEX = {state: i for i, state in enumerate(STATES)}
# Per worker hostname: the change in [tasks finished there, tasks failed there] (workers.tasks_run,
# workers.tasks_failed).
HostRuns = dict[str, list[int]]


@dataclass(frozen=True)
class Batch:
    """What a list of events holds for the store: task events by id (the first of each id), worker
    events, and the consumer's counters to add."""

    task_events: dict[str, Event]
    worker_events: list[Event]
    counters: list[tuple[str, int]]

    @classmethod
    def of(cls, events: Sequence[Event], counters: Mapping[str, int] | None) -> Batch:
        task_events: dict[str, Event] = {}
        worker_events: list[Event] = []
        for event in events:
            if event.type in TASK_EVENT_TYPES:
                if event.task_id:
                    task_events.setdefault(event.id, event)
            elif event.type in WORKER_EVENT_TYPES and event.hostname:
                worker_events.append(event)
        counter_rows = sorted((name, int(value)) for name, value in (counters or {}).items() if value)
        return cls(task_events, worker_events, counter_rows)

    def __bool__(self) -> bool:
        return bool(self.task_events or self.worker_events or self.counters)


class RecentEvents:
    """The event sets of recently folded tasks, keyed by task id with the `seq` they were written at.

    A task whose stored row still carries that seq has exactly these events (nobody, in this process or
    another, changed it since), so its next fold skips reading and decoding them again.
    """

    def __init__(self, size: int = RECENT_TASKS) -> None:
        self.size = size
        # Ordered oldest first; an OrderedDict pops its oldest in O(1), where a dict's next(iter()) walks
        # the holes its earlier deletes left at the front (quadratic in a busy cache).
        self._sets: OrderedDict[str, tuple[int, list[Event]]] = OrderedDict()
        self._lock = threading.Lock()
        # The search sources of the rows written, for the indexer (store/search.py), valid by seq too.
        self.search = search.Handoff()

    def matching(self, rows: Iterable[TaskRow]) -> dict[str, list[Event]]:
        """The cached event sets of those rows whose `seq` is still the one they were cached at."""
        out: dict[str, list[Event]] = {}
        with self._lock:
            for row in rows:
                hit = self._sets.get(row.task_id)
                if hit is not None and hit[0] == row.seq:
                    out[row.task_id] = hit[1]
        return out

    def remember(
        self, task_ids: list[str], by_task: dict[str, list[Event]], seq: int, distinct: bool = False
    ) -> None:
        """Cache the event sets of tasks written at seq + 1, seq + 2, ... in `task_ids` order (`distinct`:
        no event id is in a set twice, so the sets are cached as they are)."""
        with self._lock:
            sets = self._sets
            for offset, task_id in enumerate(task_ids, start=1):
                events = by_task[task_id]
                sets.pop(task_id, None)  # re-insert: the dict's order is least recently written first
                sets[task_id] = (
                    seq + offset,
                    events if distinct else list({e.id: e for e in events}.values()),
                )
            while len(sets) > self.size:
                sets.popitem(last=False)

    def clear(self) -> None:
        """Forget everything: entries written by a transaction that rolled back must never match."""
        with self._lock:
            self._sets.clear()
        self.search.clear()


@dataclass
class TaskChange:
    """A task's row before and after one batch (or one re-fold), for the incremental counts."""

    old: TaskRow | None
    new: TaskDetail


def apply_batch(session: Session, seq: int, batch: Batch, recent: RecentEvents) -> list[str]:
    """Write `batch` in the caller's transaction, `seq` the change counter; return the changed task ids."""
    changed: list[str] = []
    host_runs: HostRuns = {}
    if batch.task_events:
        changed = _apply_tasks(session, batch.task_events, seq, host_runs, recent)
        if changed:
            session.run("UPDATE meta SET value = ? WHERE key = 'seq'", (seq + len(changed),))
    if batch.worker_events or host_runs:
        apply_workers(session, batch.worker_events, host_runs)
    offline = sorted({e.hostname or "" for e in batch.worker_events if e.type == "worker.offline"})
    if offline:
        marked = mark_lost(session, seq + len(changed), lost.stored_goings(session, offline))
        changed += [task_id for task_id in marked if task_id not in set(changed)]
    schedules.apply(session, list(batch.task_events.values()), batch.worker_events)
    if batch.counters:
        session.many(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
            batch.counters,
        )
    return changed


def _apply_tasks(
    session: Session,
    task_events: dict[str, Event],
    seq: int,
    host_runs: HostRuns,
    recent: RecentEvents,
) -> list[str]:
    by_task: dict[str, list[Event]] = {}
    for event in task_events.values():
        by_task.setdefault(event.task_id or "", []).append(event)
    old_rows = {
        row.task_id: row
        for row in fetch_in(session, TaskRow, TASK_SELECT + " WHERE task_id IN {}", sorted(by_task))
    }
    fresh = list(task_events.values())
    if old_rows:
        # The stored events of known tasks: what the re-fold needs, and which ids are duplicates.
        known: set[str] = set()
        cached = recent.matching(old_rows.values())
        for task_id, events in cached.items():
            by_task[task_id].extend(events)
            known.update(e.id for e in events)
        owner = {row.num: task_id for task_id, row in old_rows.items() if task_id not in cached}
        for num, event_id, data in select_in(
            session, "SELECT num, id, data FROM events WHERE num IN {}", sorted(owner)
        ):
            known.add(event_id)
            by_task[owner[num]].append(event_decoder.decode(data))
        if known:
            fresh = [e for e in fresh if e.id not in known]
    task_ids = sorted({e.task_id or "" for e in fresh})
    if not task_ids:
        return []
    last_num = meta_value(session, "task_num")
    nums: dict[str, int] = {}
    for task_id in task_ids:
        old = old_rows.get(task_id)
        if old is None:
            last_num += 1
            nums[task_id] = last_num
        else:
            nums[task_id] = int(old.num)
    last_event = meta_value(session, "event_num")
    session.many(
        "INSERT INTO events (enum, num, id, ts, data) VALUES (?, ?, ?, ?, ?)",
        [(last_event + i, nums[e.task_id or ""], e.id, e.ts, encode(e)) for i, e in enumerate(fresh, 1)],
    )
    changes = [
        TaskChange(old_rows.get(task_id), fold_task(task_id, by_task[task_id])) for task_id in task_ids
    ]
    lost.on_fold(session, [c.new for c in changes])
    flows = update_counts(session, changes, seq + len(task_ids), host_runs)
    rows = [
        task_row(c.new, seq + offset, nums[c.new.task_id], flows[c.new.root_id or c.new.task_id].fnum)
        for offset, c in enumerate(changes, start=1)
    ]
    write_tasks(session, rows, old_rows)
    # Indexed behind the fold (store/search.py's Indexer), from these sources while the rows stand.
    recent.search.hand([row.num for row in rows], [row.seq for row in rows], [c.new for c in changes])
    # A batch's events are distinct by id, and so are those stored: the sets hold each id once unless
    # the batch repeated stored events.
    recent.remember(task_ids, by_task, seq, distinct=len(fresh) == len(task_events))
    added = sum(1 for task_id in task_ids if task_id not in old_rows)
    session.many(
        "UPDATE meta SET value = value + ? WHERE key = ?", [(added, "tasks"), (len(fresh), "events")]
    )
    session.many(
        "UPDATE meta SET value = ? WHERE key = ?",
        [(last_num, "task_num"), (last_event + len(fresh), "event_num")],
    )
    steps = plan_changes(session, fresh, changes, flows)
    if steps:  # planned steps (store/plan.py), numbered after the tasks of this batch
        seq += len(task_ids)
        flows = update_counts(session, [TaskChange(s.old, s.new) for s in steps], seq + len(steps), host_runs)
        rows = [task_row(s.new, seq + i, s.num, flows[s.new.root_id or ""].fnum)._replace(extra=s.extra)
                for i, s in enumerate(steps, start=1)]  # fmt: skip
        write_tasks(session, rows, {s.old.task_id: s.old for s in steps if s.old is not None})
        recent.search.hand([row.num for row in rows], [row.seq for row in rows], None)
        task_ids = task_ids + [s.new.task_id for s in steps]
    return task_ids


def mark_lost(session: Session, seq: int, gones: dict[str, list[lost.Gone]]) -> list[str]:
    """Mark LOST the running tasks of these workers that store/lost.py's rule says are lost, their counts
    moved as apply() moves them, at change numbers after `seq` (meta.seq moves on); return their ids."""
    if not gones:
        return []
    rows = fetch_in(
        session, TaskRow, TASK_SELECT + f" WHERE {lost.RUNNING_SQL} AND hostname IN {{}}", sorted(gones)
    )
    changes: list[TaskChange] = []
    for row in sorted(rows, key=lambda r: r.task_id):
        g = lost.lost_by(row.state, row.updated_at, gones[row.hostname or ""])
        if g is not None:
            task: TaskDetail = task_from_row(row, TaskDetail)
            task.events = retry_records(row)
            lost.mark(task, g)
            changes.append(TaskChange(row, task))
    if not changes:
        return []
    host_runs: HostRuns = {}
    flows = update_counts(session, changes, seq + len(changes), host_runs)
    old_rows: dict[str, TaskRow] = {}
    new_rows = []
    for offset, change in enumerate(changes, start=1):
        old, task = change.old, change.new
        assert old is not None
        old_rows[old.task_id] = old
        new_rows.append(task_row(task, seq + offset, int(old.num), flows[task.root_id or task.task_id].fnum))
    write_tasks(session, new_rows, old_rows)
    if host_runs:
        apply_workers(session, [], host_runs)
    session.run("UPDATE meta SET value = ? WHERE key = 'seq'", (seq + len(changes),))
    return [c.new.task_id for c in changes]


def update_counts(
    session: Session, changes: list[TaskChange], seq: int, host_runs: HostRuns
) -> dict[str, FlowRecord]:
    """Move flow rows (written at `seq`), per-name counts, failure clusters and the stats tables by the
    tasks' changes, and add each worker's change in finished and failed tasks to `host_runs`; return the
    flows by root id."""
    flows = _update_flows(session, changes, seq)
    _update_name_stats(session, changes)
    clusters = ClusterMoves()
    moves = StatMoves()
    pending = stats.uncounted(session)
    for change in changes:
        if change.new.fingerprint is not None or (change.old is not None and change.old.fingerprint):
            clusters.change(change.old, change.new)
        old, new = change.old, change.new
        # A row the stats tables (and tasks_failed) do not count yet: the re-fold counts it.
        counted = old is None or pending is None or stats.is_counted(int(old.num), pending)
        if counted:
            moves.change(old, new)
        if old is not None and old.state in TERMINAL_STATES:
            count_host(host_runs, old.hostname, old.state, -1, failed=counted)
        if new.state in TERMINAL_STATES:
            count_host(host_runs, new.hostname, new.state, +1, failed=counted)
    clusters.write(session)
    moves.write(session)
    return flows


def count_host(
    host_runs: HostRuns, hostname: str | None, state: str, sign: int, runs: bool = True, failed: bool = True
) -> None:
    """Add a task ending (or no longer ending) in `state` on `hostname` to the worker's counts."""
    if hostname and state in TERMINAL_STATES:
        counts = host_runs.setdefault(hostname, [0, 0])
        if runs:
            counts[0] += sign
        if failed and state == "FAILURE":
            counts[1] += sign


def write_tasks(session: Session, rows: Sequence[TaskRow], old_rows: Mapping[str, TaskRow]) -> None:
    """Insert or update task rows (`old_rows`: the stored rows of those that exist, by task id)."""
    write_rows(session, "tasks", TaskRow._fields, _TASK_INDEXED, rows, old_rows, fixed=_TASK_FIXED)


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

    Rows are keyed by their first column. An UPDATE rewrites every index that holds an assigned column,
    changed or not, so assigning only what moved keeps a task's usual lifecycle update (state, seq,
    times) off the name/root/trace/ts indexes. Writers are serialized, so "new" (not in `old_rows`)
    cannot race with another insert.
    """
    inserts: list[Row] = []
    updates: dict[tuple[int, ...], list[Row]] = {}
    indexed_positions = [i for i, column in enumerate(columns) if column in indexed]
    indexed_values = itemgetter(*indexed_positions)
    for row in rows:
        before = old_rows.get(row[0])
        if before is None:
            inserts.append(row)
        elif indexed_values(row) == indexed_values(before):
            updates.setdefault((), []).append(row)
        else:
            changed = tuple(i for i in indexed_positions if row[i] != before[i])
            updates.setdefault(changed, []).append(row)
    if inserts:
        session.many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {in_list(columns)}", inserts)
    plain = [i for i, column in enumerate(columns) if i > 0 and column not in indexed | fixed]
    for changed, group in updates.items():
        assigned = plain + list(changed)
        sets = ", ".join(f"{columns[i]} = ?" for i in assigned)
        parameters = itemgetter(*assigned, 0)  # the values to set, then the key
        session.many(f"UPDATE {table} SET {sets} WHERE {columns[0]} = ?", [parameters(row) for row in group])


def read_flows(session: Session, roots: Sequence[str]) -> dict[str, FlowRow]:
    """The flow rows of these root ids, by root id."""
    return {
        row.root_id: row for row in fetch_in(session, FlowRow, FLOW_SELECT + " WHERE root_id IN {}", roots)
    }


def _update_flows(session: Session, changes: list[TaskChange], seq: int) -> dict[str, FlowRecord]:
    """Apply the tasks' changes to their flow rows (numbering new flows); return the flows by root."""
    roots = sorted(
        {c.new.root_id or c.new.task_id for c in changes} | {c.old.root_id for c in changes if c.old}
    )
    old_rows = read_flows(session, roots)
    flows = {root: FlowRecord.from_row(row) for root, row in old_rows.items()}
    last_flow = first_flow = meta_value(session, "flow_num")
    for change in changes:
        old, task = change.old, change.new
        if old is not None and old.root_id in flows:
            flows[old.root_id].remove(old.state)
        root = task.root_id or task.task_id
        if root not in flows:
            last_flow += 1
            flows[root] = FlowRecord(root_id=root, fnum=last_flow)
        flows[root].add(task)
    save_flows(session, flows.values(), seq, old_rows)
    if last_flow != first_flow:
        session.run("UPDATE meta SET value = ? WHERE key = 'flow_num'", (last_flow,))
    return flows


def save_flows(
    session: Session, flows: Iterable[FlowRecord], seq: int, old_rows: Mapping[str, FlowRow]
) -> None:
    """Write the flows that still have tasks; delete the stored ones left with none."""
    keep = [flow.to_row(seq) for flow in flows if flow.task_count > 0]
    gone = sorted(flow.root_id for flow in flows if flow.task_count <= 0 and flow.root_id in old_rows)
    write_rows(session, "flows", FlowRow._fields, _FLOW_INDEXED, keep, old_rows)
    for chunk in chunks(gone):
        session.run(f"DELETE FROM flows WHERE root_id IN {in_list(chunk)}", chunk)


def _update_name_stats(session: Session, changes: list[TaskChange]) -> None:
    deltas: dict[str, list[int]] = {}
    for change in changes:
        old, new = change.old, change.new
        if old is not None and old.name:
            deltas.setdefault(old.name, [0] * len(STATES))[STATE_INDEX[old.state]] -= 1
        if new.name:
            deltas.setdefault(new.name, [0] * len(STATES))[STATE_INDEX[new.state]] += 1
    add_name_stats(session, deltas)


def add_name_stats(session: Session, deltas: dict[str, list[int]]) -> None:
    """Add per-name deltas (lists in schema.STATES order) to `name_stats`; a count never goes below 0."""
    deltas = {name: delta for name, delta in deltas.items() if any(delta)}
    if not deltas:
        return
    names = sorted(deltas)
    current = {
        row.name: state_counts(row)
        for row in fetch_in(session, NameStatsRow, NAME_STATS_SELECT + " WHERE name IN {}", names)
    }
    rows = []
    for name in names:
        counts = current.get(name, [0] * len(STATES))
        rows.append((name, *(max(0, a + b) for a, b in zip(counts, deltas[name], strict=True))))
    session.many(_NAME_STATS_UPSERT, rows)


def apply_workers(session: Session, events: list[Event], host_runs: HostRuns) -> None:
    """Fold worker events into `workers` (and what they announced into `registry`); add `host_runs`
    (finished tasks by hostname) to their task counts."""
    hosts = sorted({e.hostname for e in events if e.hostname} | set(host_runs))
    workers = {
        row.hostname: row
        for row in fetch_in(session, WorkerRow, WORKER_SELECT + " WHERE hostname IN {}", hosts)
    }
    announced: dict[str, tuple[str | None, str | None, set[str]]] = {}
    for host in hosts:
        workers.setdefault(host, WorkerRow(hostname=host))
    for event in sorted(events, key=lambda e: e.ts):
        host = event.hostname or ""
        w = workers[host]
        if event.type == "worker.offline":
            workers[host] = w._replace(offline_at=max(w.offline_at or event.ts, event.ts))
            continue
        w = w._replace(last_heartbeat=max(w.last_heartbeat or event.ts, event.ts))
        if event.pid is not None:
            w = w._replace(pid=event.pid)
        info = event.info or {}
        interval = event.heartbeat_interval or info.get("heartbeat_interval", info.get("interval"))
        if isinstance(interval, (int, float)) and interval > 0:
            w = w._replace(heartbeat_interval=min(float(interval), MAX_HEARTBEAT_INTERVAL))
        if event.type == "worker.online" and (w.online_since is None or event.ts >= w.online_since):
            w = w._replace(online_since=event.ts)
            if event.tasks is not None:
                w = w._replace(registered=json_encoder.encode(sorted(t.name for t in event.tasks)).decode())
                for info_task in event.tasks:
                    signature, doc, hosts_of = announced.get(info_task.name, (None, None, set()))
                    announced[info_task.name] = (
                        info_task.signature or signature,
                        info_task.doc or doc,
                        hosts_of | {host},
                    )
            if event.info:
                w = w._replace(info=json_encoder.encode(event.info).decode())
        workers[host] = w
    for host, (runs, failed) in host_runs.items():
        w = workers[host]
        workers[host] = w._replace(
            tasks_run=max(0, int(w.tasks_run) + runs), tasks_failed=max(0, int(w.tasks_failed) + failed)
        )
    session.many(_WORKER_UPSERT, [workers[host] for host in hosts])
    if announced:
        _update_registry(session, announced)


def _update_registry(session: Session, announced: dict[str, tuple[str | None, str | None, set[str]]]) -> None:
    """Merge what workers announced (signature, doc, hostnames by task name) into `registry`."""
    names = sorted(announced)
    known = {
        row.name: row for row in fetch_in(session, RegistryRow, REGISTRY_SELECT + " WHERE name IN {}", names)
    }
    rows = []
    for name in names:
        signature, doc, hosts_of = announced[name]
        old = known.get(name)
        if old is not None:
            signature = signature or old.signature
            doc = doc or old.doc
            hosts_of = hosts_of | set(json_decoder.decode(old.workers))
        rows.append(RegistryRow(name, signature, doc, json_encoder.encode(sorted(hosts_of)).decode()))
    session.many(_REGISTRY_UPSERT, rows)
