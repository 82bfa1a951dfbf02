"""The store protocol: one schema, two engines (SQLite embedded default, PostgreSQL shared).

Tasks are folds of their events: `apply()` is idempotent per event id and order-independent, so the
consumer can re-deliver after a crash and acknowledge only after `apply()` returned (it commits).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

from celery_flow.events import Event
from celery_flow.flow.model import (
    CollapsedGroup,
    FailureCluster,
    FlowSummary,
    Heatmap,
    MemberPage,
    NameTrend,
    Overview,
    Page,
    RegisteredTask,
    StatMetric,
    TaskDetail,
    TaskState,
    TaskSummary,
    TraceView,
    WorkerInfo,
)

if TYPE_CHECKING:
    from celery_flow.store.members import FlowParts, MemberSort
    from celery_flow.store.schedules import Schedules
    from celery_flow.store.stats import AllTime


class StoreError(Exception):
    """The store could not be opened or written (unreachable, read-only, full)."""


@dataclass(frozen=True)
class TaskFilter:
    state: str | None = None
    name: str | None = None
    root_id: str | None = None
    trace_id: str | None = None
    worker: str | None = None
    # free text: task id prefixes, names, and words and key:value pairs inside args, kwargs, results and
    # errors (store/search.py)
    q: str | None = None
    since: float | None = None
    until: float | None = None
    # Tasks whose latest failure or retry had this cause (store/failures.py).
    fingerprint: str | None = None
    # Only tasks running far longer than their name's history or `--stuck-after` (store/stuck.py).
    stuck: bool = False
    # The queue a task was sent to (with state PENDING: a queue's backlog).
    queue: str | None = None


@dataclass(frozen=True)
class StoreStats:
    tasks: int
    events: int
    # Consumer counters persisted beside the data: rejected events per kind, dropped by publishers.
    counters: Mapping[str, int]
    # Change numbers (seq) written but not yet in the search index (store/search.py's indexer).
    search_lag: int = 0


class IndexRun(NamedTuple):
    """What one run of the search indexer did: task rows indexed, and change numbers still behind."""

    indexed: int
    lag: int


class LostCheck(NamedTuple):
    """What one check for lost tasks did: the tasks it marked LOST, and seconds until the next is due."""

    changed: list[str]
    next_in: float


class Store(Protocol):
    def apply(self, events: Sequence[Event], counters: Mapping[str, int] | None = None) -> list[str]:
        """Fold events into tasks/workers in one transaction; return the ids of tasks that changed."""
        ...

    def get_task(self, task_id: str) -> TaskDetail | None: ...

    def list_tasks(self, filt: TaskFilter, limit: int, cursor: str | None) -> Page[TaskSummary]: ...

    def list_flows(self, filt: TaskFilter, limit: int, cursor: str | None) -> Page[FlowSummary]: ...

    def flow_tasks(self, root_id: str) -> list[TaskDetail]:
        """Every task of one root workflow (no args/results needed), for flow.graph."""
        ...

    def flow_parts(self, root_id: str, collapse: int) -> FlowParts | None:
        """A flow's tasks to draw one by one, with each group of more than `collapse` members summarised
        (store/members.py); None for an unknown flow."""
        ...

    def group_members(
        self,
        root_id: str,
        group_id: str,
        state: TaskState | None,
        sort: MemberSort,
        limit: int,
        cursor: str | None,
    ) -> MemberPage | None:
        """One keyset page of a group's members; None for an unknown flow or group."""
        ...

    def group_counts(self, root_id: str, group_ids: Sequence[str]) -> dict[str, CollapsedGroup]:
        """The current figures of these groups of one flow (live updates of collapsed nodes)."""
        ...

    def trace(self, trace_id: str) -> TraceView | None: ...

    def registry(self) -> list[RegisteredTask]: ...

    def failures(
        self, since: float | None, until: float | None, name: str | None, limit: int = 100
    ) -> list[FailureCluster]:
        """Failure clusters with failures or retries in [since, until), most failures first."""
        ...

    def workers(self) -> list[WorkerInfo]: ...

    def heatmap(
        self, name: str | None, metric: StatMetric, since: float | None, until: float | None
    ) -> Heatmap:
        """Tasks per time bucket and duration bucket (store/stats.py)."""
        ...

    def name_trend(self, name: str, since: float | None, until: float | None) -> NameTrend: ...

    def overview(self, since: float | None, until: float | None) -> Overview: ...

    def schedules(
        self, name: str | None = None, grace: float | None = None, now: float | None = None, recent: int = 30
    ) -> Schedules:
        """Beat schedule entries (or the one called `name`) judged at `now` with `grace` seconds of grace
        (defaults: the clock, --schedule-grace), each with its `recent` newest runs: store/schedules.py."""
        ...

    def all_time(self) -> AllTime:
        """Counts since the store was created, for Prometheus (store/stats.py)."""
        ...

    def changes_since(self, cursor: int, limit: int = 500) -> tuple[list[TaskSummary], int]:
        """Tasks changed after `cursor` (a store-wide change counter) and the new cursor, for live push."""
        ...

    def head_cursor(self) -> int:
        """The current change counter: a new live poller starts here, pushing only what changes next."""
        ...

    def stats(self) -> StoreStats: ...

    def sweep(self, ttl: float | None, max_tasks: int | None) -> int:
        """Delete tasks older than ttl seconds and beyond max_tasks (oldest first); return count."""
        ...

    def check_lost(self) -> LostCheck:
        """Mark LOST the running tasks of workers silent for 3 x their heartbeat interval (store/lost.py);
        idempotent, so several processes may run it at once."""
        ...

    def index_search(self, budget: float = 0.5, settle: float = 0.0) -> IndexRun:
        """Index the tasks written since the search index's watermark (store/search.py), for about
        `budget` seconds at most, leaving those written in the last `settle` seconds (as far as this
        process's runs saw) to a later run; several processes may run it at once (they take turns)."""
        ...

    def ping(self) -> None:
        """Raise StoreError unless the store answers now."""
        ...

    def close(self) -> None: ...
