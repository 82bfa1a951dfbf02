"""The Store both engines share: each method runs one module's functions in a session.

Writes are in write.py (apply) and retention.py (sweep), reads in queries.py, row mapping in rows.py,
sessions and transactions in connection.py, schema versions and the re-fold in migrations.py and
backfill.py; sqlite.py and postgresql.py only connect (and open the schema).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL, Event
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
from celery_flow.store import failures as clusters
from celery_flow.store import lost, members, queries, retention, schedules, search, stats
from celery_flow.store.backfill import start_background, stop_background
from celery_flow.store.base import IndexRun, LostCheck, StoreStats, TaskFilter
from celery_flow.store.connection import C, Session, SqlConnections
from celery_flow.store.migrations import MigrateMode, Plan, open_schema
from celery_flow.store.stuck import StuckRule
from celery_flow.store.write import Batch, RecentEvents, apply_batch, mark_lost

T = TypeVar("T", bound=TaskSummary)


class SqlStore(SqlConnections[C]):
    """Everything of the Store protocol, over an engine's connections."""

    # What opening the store did to its schema (set by the engine's __init__, store/migrations.py).
    migration: Plan

    def __init__(
        self,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        stuck_after: float | None = None,
        schedule_grace: float | None = None,
    ) -> None:
        super().__init__()
        # Assumed for a worker that does not announce its own interval.
        self.heartbeat_interval = heartbeat_interval
        self.stuck = StuckRule(stuck_after)
        # Seconds a schedule entry's next run may be overdue before it is late (store/schedules.py).
        self.schedule_grace = schedules.DEFAULT_GRACE if schedule_grace is None else schedule_grace
        self._recent = RecentEvents()
        self._indexer = search.Indexer(self._recent.search)

    def open_schema(self, where: str, migrate: MigrateMode) -> None:
        """Create or migrate the schema (store/migrations.py; engines call this once connected), then start
        the background re-fold that a migration left, in auto mode."""
        self.migration = open_schema(self, where, migrate)
        if self.migration.refold_in_background(migrate):
            start_background(self)

    def close(self) -> None:
        stop_background(self)  # the re-fold's batch in flight commits first
        super().close()

    # -- writes -----------------------------------------------------------------------------------

    def apply(self, events: Sequence[Event], counters: Mapping[str, int] | None = None) -> list[str]:
        batch = Batch.of(events, counters)
        if not batch:
            return []
        try:
            return self._writing(lambda s, seq: apply_batch(s, seq, batch, self._recent))
        except BaseException:
            self._recent.clear()
            raise

    def check_lost(self) -> LostCheck:
        now = time.time()
        # Read first: the write lock is taken only when a gone worker still holds running tasks.
        gones, next_in = self._reading(lambda s: lost.due(s, self.heartbeat_interval, now))
        if not gones:
            return LostCheck([], next_in)
        changed = self._writing(
            lambda s, seq: mark_lost(s, seq, lost.record_silence(s, self.heartbeat_interval, now))
        )
        return LostCheck(changed, next_in)

    def index_search(self, budget: float = search.INDEX_BUDGET, settle: float = 0.0) -> IndexRun:
        indexed, began = 0, time.monotonic()
        while True:
            try:
                count, lag = self._writing(lambda s, seq: self._indexer.step(s, seq, settle, began))
            except BaseException:
                self._indexer.reset()
                raise
            indexed += count
            if not lag or time.monotonic() - began >= budget:
                return IndexRun(indexed, lag)

    def sweep(self, ttl: float | None, max_tasks: int | None, budget: float = retention.SWEEP_BUDGET) -> int:
        return retention.sweep(self._writing, ttl, max_tasks, budget)

    # -- reads ------------------------------------------------------------------------------------

    def get_task(self, task_id: str) -> TaskDetail | None:
        return self._reading(lambda s: self._flagged(s, queries.get_task(s, task_id)))

    def list_tasks(self, filt: TaskFilter, limit: int, cursor: str | None) -> Page[TaskSummary]:
        def read(s: Session) -> Page[TaskSummary]:
            also = self.stuck.condition(s) if filt.stuck else None
            page = queries.list_tasks(s, filt, limit, cursor, also)
            self.stuck.flag(s, page.items)
            return page

        return self._reading(read)

    def list_flows(self, filt: TaskFilter, limit: int, cursor: str | None) -> Page[FlowSummary]:
        return self._reading(lambda s: queries.list_flows(s, filt, limit, cursor))

    def flow_tasks(self, root_id: str) -> list[TaskDetail]:
        return self._reading(lambda s: self._flagged_all(s, queries.flow_tasks(s, root_id)))

    def flow_parts(self, root_id: str, collapse: int) -> members.FlowParts | None:
        def read(s: Session) -> members.FlowParts | None:
            parts = members.flow_parts(s, root_id, collapse)
            if parts is not None:
                self.stuck.flag(s, parts.tasks)
            return parts

        return self._reading(read)

    def group_members(
        self,
        root_id: str,
        group_id: str,
        state: TaskState | None,
        sort: members.MemberSort,
        limit: int,
        cursor: str | None,
    ) -> MemberPage | None:
        def read(s: Session) -> MemberPage | None:
            page = members.members_page(s, root_id, group_id, state, sort, limit, cursor)
            if page is not None:
                self.stuck.flag(s, page.items)
            return page

        return self._reading(read)

    def group_counts(self, root_id: str, group_ids: Sequence[str]) -> dict[str, CollapsedGroup]:
        def read(s: Session) -> dict[str, CollapsedGroup]:
            return {gid: g.collapsed() for gid, g in members.group_counts(s, root_id, group_ids).items()}

        return self._reading(read)

    def trace(self, trace_id: str) -> TraceView | None:
        def read(s: Session) -> TraceView | None:
            view = queries.trace(s, trace_id)
            if view is not None:
                self.stuck.flag(s, view.tasks)
            return view

        return self._reading(read)

    def _flagged(self, s: Session, task: T | None) -> T | None:
        if task is not None:
            self.stuck.flag(s, [task])
        return task

    def _flagged_all(self, s: Session, tasks: list[T]) -> list[T]:
        self.stuck.flag(s, tasks)
        return tasks

    def registry(self) -> list[RegisteredTask]:
        return self._reading(queries.registry)

    def failures(
        self,
        since: float | None,
        until: float | None,
        name: str | None,
        limit: int = clusters.DEFAULT_CLUSTERS,
    ) -> list[FailureCluster]:
        return self._reading(lambda s: clusters.failures(s, since, until, name, limit))

    def workers(self) -> list[WorkerInfo]:
        return self._reading(lambda s: queries.workers(s, self.heartbeat_interval))

    def heatmap(
        self, name: str | None, metric: StatMetric, since: float | None, until: float | None
    ) -> Heatmap:
        return self._reading(lambda s: stats.heatmap(s, name, metric, since, until))

    def name_trend(self, name: str, since: float | None, until: float | None) -> NameTrend:
        return self._reading(lambda s: stats.name_trend(s, name, since, until))

    def overview(self, since: float | None, until: float | None) -> Overview:
        def read(s: Session) -> Overview:
            t = stats.totals(s, since, until)
            workers = queries.workers(s, self.heartbeat_interval)
            condition, params = self.stuck.condition(s)
            stuck = int(s.rows(f"SELECT COUNT(*) FROM tasks WHERE {condition}", params)[0][0])
            beat = schedules.read(s, time.time(), self.schedule_grace, recent=0,
                                  default_interval=self.heartbeat_interval, counts=False)  # fmt: skip
            finished = sum(sum(counts) for counts in t.throughput.values())
            failed = sum(t.throughput.get("FAILURE", ()))
            per_bucket = [sum(column) for column in zip(*t.throughput.values(), strict=True)]
            failures = t.throughput.get("FAILURE", [0] * len(per_bucket))
            rates = [f / n if n else None for f, n in zip(failures, per_bucket, strict=True)]
            return Overview(
                since=t.since, until=t.until, time_edges=t.time_edges, throughput=t.throughput,
                finished=finished, failed=failed, failure_rate=failed / finished if finished else None,
                failure_rates=rates,
                backlog=t.backlog,
                workers_online=sum(1 for w in workers if w.status == "online"),
                workers_offline=sum(1 for w in workers if w.status == "offline"),
                lost=sum(t.throughput["LOST"]), stuck=stuck,
                top_failures=clusters.failures(s, t.since, t.until, None, stats.TOP),
                slowest=t.slowest, regressions=t.regressions,
                schedules=len(beat.items), schedules_late=beat.late, schedules_missed=beat.missed,
                beat_down=beat.beat_down,
            )  # fmt: skip

        return self._reading(read)

    def schedules(
        self,
        name: str | None = None,
        grace: float | None = None,
        now: float | None = None,
        recent: int = schedules.RECENT_RUNS,
    ) -> schedules.Schedules:
        """Every beat schedule entry (or the one called `name`) judged at `now` (default: the clock) with
        `grace` seconds of grace (default: the store's, --schedule-grace), each with its `recent` newest
        runs, and the beats: store/schedules.py."""
        when = time.time() if now is None else now
        grace_s = self.schedule_grace if grace is None else grace
        return self._reading(
            lambda s: schedules.read(s, when, grace_s, name, recent, self.heartbeat_interval)
        )

    def all_time(self) -> stats.AllTime:
        def read(s: Session) -> stats.AllTime:
            online = sum(1 for w in queries.workers(s, self.heartbeat_interval) if w.status == "online")
            return stats.all_time(s)._replace(workers_online=online)

        return self._reading(read)

    def changes_since(self, cursor: int, limit: int = 500) -> tuple[list[TaskSummary], int]:
        def read(s: Session) -> tuple[list[TaskSummary], int]:
            tasks, head = queries.changes_since(s, cursor, limit)
            self.stuck.flag(s, tasks)
            return tasks, head

        return self._reading(read)

    def head_cursor(self) -> int:
        return self._reading(queries.head_cursor)

    def stats(self) -> StoreStats:
        return self._reading(queries.stats)

    def ping(self) -> None:
        self._reading(lambda s: s.rows("SELECT 1"))
