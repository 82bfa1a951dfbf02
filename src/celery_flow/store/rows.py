"""Row mapping: each table's row as a named tuple, and tasks and flows to and from those rows.

A SELECT names the fields of the row type it fills (`select()`), so every column is read by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

import msgspec

from celery_flow.flow.flows import FlowTally, first_seen, summary_from_counts
from celery_flow.flow.model import (
    EventRecord,
    FlowState,
    FlowSummary,
    Segment,
    TaskDetail,
    TaskState,
    TaskSummary,
)
from celery_flow.store.connection import Session, select_in
from celery_flow.store.schema import STATE_COLUMNS, STATES, V3_STATE_COUNT

T = TypeVar("T", bound=tuple[Any, ...])
# A row type from a fetched row: tuple.__new__ skips NamedTuple._make's length check, which a SELECT
# of the type's own fields makes moot.
_new = tuple.__new__

json_encoder = msgspec.json.Encoder()
json_decoder = msgspec.json.Decoder()


class TaskRow(NamedTuple):
    """A row of `tasks` (schema.TASK_COLUMNS, in that order)."""

    task_id: str
    name: str | None
    state: TaskState
    root_id: str
    parent_id: str | None
    group_id: str | None
    chord_id: str | None
    trace_id: str | None
    hostname: str | None
    queue: str | None
    retries: int
    sent_at: float | None
    received_at: float | None
    started_at: float | None
    finished_at: float | None
    runtime: float | None
    exception: str | None
    updated_at: float | None
    ts: float
    seq: int
    extra: str
    num: int
    fnum: int
    queue_wait: float | None
    fingerprint: str | None


class FlowRow(NamedTuple):
    """A row of `flows` (schema.FLOW_COLUMNS, in that order): one count column per state."""

    root_id: str
    root_name: str | None
    state: FlowState
    trace_id: str | None
    n_pending: int
    n_received: int
    n_started: int
    n_retry: int
    n_success: int
    n_failure: int
    n_revoked: int
    n_rejected: int
    task_count: int
    started_at: float | None
    last_finished: float | None
    updated_at: float | None
    ts: float
    seq: int
    fnum: int
    n_planned: int
    n_not_run: int
    n_lost: int


class NameStatsRow(NamedTuple):
    """A row of `name_stats`: counts by state of one task name."""

    name: str
    n_pending: int
    n_received: int
    n_started: int
    n_retry: int
    n_success: int
    n_failure: int
    n_revoked: int
    n_rejected: int
    n_planned: int
    n_not_run: int
    n_lost: int


class WorkerRow(NamedTuple):
    """A row of `workers` (schema.WORKER_COLUMNS, in that order); registered and info are JSON."""

    hostname: str
    online_since: float | None = None
    last_heartbeat: float | None = None
    offline_at: float | None = None
    heartbeat_interval: float | None = None
    pid: int | None = None
    tasks_run: int = 0
    registered: str = "[]"
    info: str = "{}"
    # The last heartbeat of a worker judged gone for silence (store/lost.py); a newer one supersedes it.
    silent_since: float | None = None
    # Tasks that ended there in a failed state (flow/model.py FAILED_STATES), moved like tasks_run.
    tasks_failed: int = 0


class RegistryRow(NamedTuple):
    """A row of `registry`: what workers announced about one task name; workers is JSON."""

    name: str
    signature: str | None
    doc: str | None
    workers: str


def select(fields: Sequence[str], table: str) -> str:
    """`SELECT <fields> FROM <table>`: pass a row type's `_fields`."""
    return "SELECT " + ", ".join(fields) + " FROM " + table


TASK_SELECT = select(TaskRow._fields, "tasks")
FLOW_SELECT = select(FlowRow._fields, "flows")
NAME_STATS_SELECT = select(NameStatsRow._fields, "name_stats")
WORKER_SELECT = select(WorkerRow._fields, "workers")
REGISTRY_SELECT = select(RegistryRow._fields, "registry")


def fetch(session: Session, row_type: type[T], sql: str, params: Sequence[Any] = ()) -> list[T]:
    """The rows of `sql` (a SELECT of `row_type`'s fields) as `row_type` tuples."""
    return [_new(row_type, row) for row in session.rows(sql, params)]


def fetch_in(
    session: Session, row_type: type[T], sql: str, values: Sequence[Any], extra: Sequence[Any] = ()
) -> list[T]:
    """`select_in` with each row as a `row_type` tuple."""
    return [_new(row_type, row) for row in select_in(session, sql, values, extra)]


_NO_COUNTS = (0,) * len(STATES)
# The count columns of a FlowRow or NameStatsRow, in the order of schema.STATES.
state_counts: Callable[[FlowRow | NameStatsRow], tuple[int, ...]] = attrgetter(*STATE_COLUMNS.values())


def task_row(task: TaskDetail, seq: int, num: int, fnum: int) -> TaskRow:
    """The tasks row of a folded task (positional, in TaskRow's field order: the write path's hot spot)."""
    ts = first_seen(task)
    return TaskRow(
        task.task_id, task.name, task.state, task.root_id or task.task_id, task.parent_id, task.group_id,
        task.chord_id, task.trace_id, task.hostname, task.queue, task.retries, task.sent_at,
        task.received_at, task.started_at, task.finished_at, task.runtime, task.exception, task.updated_at,
        ts if ts is not None else 0.0, seq, _task_extra(task), num, fnum, task.queue_wait, task.fingerprint,
    )  # fmt: skip


def _task_extra(task: TaskDetail) -> str:
    """The JSON of the fields no query filters on (and the retries' causes, for the failure clusters)."""
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
    if task.reason is not None:
        extra["reason"] = task.reason
    retries = retry_causes(task)
    if retries:
        extra["rfp"] = retries  # the fingerprint and time of each retry (store/failures.py)
    return json_encoder.encode(extra).decode("utf-8")


def retry_causes(task: TaskDetail) -> list[list[Any]]:
    """The `rfp` of a row's extra JSON: [fingerprint, ts] of each retry (store/failures.py)."""
    if task.fingerprint is None:  # never retried (flow/fold.py `fingerprint`)
        return []
    return [[e.fingerprint, e.ts] for e in task.events if e.type == "retried" and e.fingerprint]


def retry_records(row: TaskRow) -> list[EventRecord]:
    """The retries a row's `rfp` keeps, as the event records `retry_causes` reads them from: a task
    rebuilt from its row (not re-folded) keeps its retries in its failure clusters."""
    if row.fingerprint is None or '"rfp"' not in row.extra:
        return []
    causes = json_decoder.decode(row.extra).get("rfp", ())
    return [EventRecord(id="", type="retried", ts=ts, fingerprint=fp) for fp, ts in causes]


def task_from_row(row: TaskRow, cls: type[TaskSummary] = TaskSummary) -> Any:
    """A TaskSummary (or, with `cls=TaskDetail`, a TaskDetail with its timeline) from a tasks row."""
    extra: dict[str, Any] = json_decoder.decode(row.extra) if row.extra and row.extra != "{}" else {}
    task = cls(
        task_id=row.task_id, name=row.name, state=row.state, root_id=row.root_id, parent_id=row.parent_id,
        group_id=row.group_id, chord_id=row.chord_id, trace_id=row.trace_id, hostname=row.hostname,
        queue=row.queue, retries=row.retries, sent_at=row.sent_at, received_at=row.received_at,
        started_at=row.started_at, finished_at=row.finished_at, runtime=row.runtime,
        exception=row.exception, links=extra.get("links", []), link_errors=extra.get("link_errors", []),
        durations=extra.get("durations", {}), updated_at=row.updated_at, queue_wait=row.queue_wait,
        reason=extra.get("reason"), fingerprint=row.fingerprint,
    )  # fmt: skip
    if isinstance(task, TaskDetail):
        task.segments = [Segment(kind=k, start=s, end=e) for k, s, e in extra.get("segments", ())]
        task.pid = extra.get("pid")
        task.eta = extra.get("eta")
        task.expires = extra.get("expires")
    return task


@dataclass
class FlowRecord(FlowTally):
    """A flow's tally as stored: `fnum` numbers flows in creation order (tasks point at it)."""

    fnum: int = 0

    @classmethod
    def from_row(cls, row: FlowRow) -> FlowRecord:
        return cls(
            root_id=row.root_id, root_name=row.root_name, trace_id=row.trace_id,
            counts={state: n for state, n in zip(STATES, state_counts(row), strict=True) if n},
            task_count=row.task_count,
            started_at=row.started_at, last_finished=row.last_finished, updated_at=row.updated_at,
            fnum=row.fnum,
        )  # fmt: skip

    def to_row(self, seq: int) -> FlowRow:
        ts = self.started_at if self.started_at is not None else (self.updated_at or 0.0)
        counts = list(map(self.counts.get, STATES, _NO_COUNTS))
        return _new(FlowRow, (
            self.root_id, self.root_name, self.state, self.trace_id, *counts[:V3_STATE_COUNT],
            self.task_count, self.started_at, self.last_finished, self.updated_at, ts, seq, self.fnum,
            *counts[V3_STATE_COUNT:],
        ))  # fmt: skip


def flow_summary(row: FlowRow) -> FlowSummary:
    """The summary of a stored flow, with the state stored beside its counts."""
    return summary_from_counts(
        row.root_id, dict(zip(STATES, state_counts(row), strict=True)), row.task_count, row.started_at,
        row.last_finished, root_name=row.root_name, trace_id=row.trace_id, updated_at=row.updated_at,
        state=row.state,
    )  # fmt: skip
