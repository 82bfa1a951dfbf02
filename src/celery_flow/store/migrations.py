"""Schema versions and the numbered steps between them: a store any release wrote opens here, migrated.

`open_schema()` runs when a store is opened (both engines, through SqlStore.open_schema, which then
starts the background re-fold a migration left), in whichever process comes first:

1. Read the schema version without taking any lock. A store of a newer version is refused right here,
   before anything is written to it; a store at SCHEMA_VERSION needs nothing more.
2. Otherwise take the store's migration lock, waiting up to MIGRATION_WAIT for a process that holds it:
   PostgreSQL: a transaction-scoped advisory lock (the key older releases take to create the schema);
   SQLite: the write lock of BEGIN IMMEDIATE (in WAL mode readers, older processes included, go on
   reading the old snapshot meanwhile). Read the version again: another process may have migrated the
   store while this one waited, and then there is nothing left to do.
3. Create a new store at SCHEMA_VERSION, or run each step from the version found on, all in that one
   transaction (both engines have transactional DDL: a crash leaves the old schema whole), record each
   step in the `migrations` table, and when a step changes what the fold derives from events, leave a
   re-fold of every task to store/backfill.py, which runs after the lock is released, in batches.

A step is DDL plus a flag: schema-only changes (a column, an index) run here under the lock; anything
derived from events is re-folded from the events table, never patched in SQL. Steps are history: once
released, a step's text never changes; `schema.py` holds the shape of a new store, and a test checks
that migrating reaches exactly that shape.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from celery_flow import __version__
from celery_flow.store.base import StoreError
from celery_flow.store.schema import SCHEMA_VERSION, Dialect, ddl, render
from celery_flow.store.search import DDL as SEARCH_DDL

if TYPE_CHECKING:
    from celery_flow.store.connection import Session, SqlConnections

    # An open SQL store (store/sql.py's SqlStore): its sessions, connections and dialect.
    SqlStore = SqlConnections[Any]

log = logging.getLogger("celery_flow.store")
R = TypeVar("R")

# auto: migrate at open and re-fold in a background thread; foreground: migrate at open, the caller
# re-folds (`celery-flow migrate`); plan: only read what would be done (`celery-flow migrate --dry-run`).
MigrateMode = Literal["auto", "foreground", "plan"]

# The oldest schema a release wrote. Schema 1 came only from development builds before the first release.
OLDEST = 2
# Seconds a process waits for another one that holds the migration lock (a big store's index takes time).
MIGRATION_WAIT = 600
# The advisory lock key releases take before creating or migrating a PostgreSQL store.
PG_LOCK_KEY = 815242607


@dataclass(frozen=True)
class Step:
    """What brings a store from `version - 1` to `version`."""

    version: int
    summary: str
    # Generic SQL (schema.render swaps the type names per engine), `;`-separated.
    sql: str
    # What the SQL costs on a big store, for `celery-flow migrate --dry-run`; {tasks} is the task count.
    cost: str
    # The fold derives something new or differently from this version on: re-fold every task.
    refold: bool = False
    # Statements one engine alone runs after `sql` (an index kind the other engine lacks), by dialect.
    dialect_sql: dict[str, tuple[str, ...]] = field(default_factory=dict)


STEPS: tuple[Step, ...] = (
    Step(
        3,
        "tasks.queue_wait (seconds from queued to started), carried by the per-name index for heatmaps; "
        "a record of applied migrations",
        """
        ALTER TABLE tasks ADD COLUMN queue_wait FLOAT8;
        DROP INDEX IF EXISTS tasks_name_state;
        CREATE INDEX tasks_name_state ON tasks (name, ts, task_id, state, runtime, queue_wait);
        CREATE TABLE IF NOT EXISTS migrations (
            version BIGINT PRIMARY KEY,
            summary TEXT NOT NULL,
            applied_at FLOAT8 NOT NULL,
            applied_by TEXT NOT NULL,
            app_version TEXT NOT NULL,
            refolded_at FLOAT8
        )
        """,
        "adds a column (no row rewritten), rebuilds one index over {tasks} tasks",
        refold=True,
    ),
    Step(
        4,
        "insights: states PLANNED, NOT_RUN and LOST counted per flow and name, tasks.fingerprint (failure "
        "clusters), partial indexes of a cluster's tasks, a flow's planned steps and what runs now; "
        "failures and retries counted by cause and time (failure_clusters, failure_counts); "
        "workers.silent_since (a worker judged gone for silence); tasks finished, runtimes and queue waits "
        "counted per name and time, the backlog per queue and failed tasks per worker (filled by the "
        "re-fold); the search index of arguments, results "
        "and errors (filled by the consumers' search indexer); beat schedule entries and their runs "
        "(schedules, schedule_runs); a flow's tasks indexed with their group, and a group's members by "
        "time and by runtime (collapsed fan-outs)",
        """
        ALTER TABLE tasks ADD COLUMN fingerprint TEXT;
        ALTER TABLE flows ADD COLUMN n_planned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE flows ADD COLUMN n_not_run INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE flows ADD COLUMN n_lost INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE name_stats ADD COLUMN n_planned INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE name_stats ADD COLUMN n_not_run INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE name_stats ADD COLUMN n_lost INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX tasks_fingerprint ON tasks (fingerprint, ts, task_id) WHERE fingerprint IS NOT NULL;
        CREATE INDEX tasks_planned ON tasks (fnum) WHERE state = 'PLANNED';
        CREATE INDEX tasks_running ON tasks (hostname, started_at) WHERE state IN ('RECEIVED', 'STARTED');
        DROP INDEX IF EXISTS tasks_flow_host;
        CREATE INDEX tasks_flow_group ON tasks (fnum, ts, task_id, hostname, group_id);
        CREATE INDEX tasks_group_ts ON tasks (fnum, group_id, ts, task_id, state) WHERE group_id IS NOT NULL;
        CREATE INDEX tasks_group_runtime ON tasks (
            fnum, group_id, runtime, task_id, state, retries, queue_wait, finished_at, chord_id, parent_id
        ) WHERE group_id IS NOT NULL;
        CREATE INDEX tasks_group_wait ON tasks (fnum, group_id, queue_wait, state, retries, task_id)
            WHERE group_id IS NOT NULL;
        CREATE TABLE IF NOT EXISTS failure_clusters (
            fingerprint TEXT PRIMARY KEY,
            exception_type TEXT NOT NULL,
            message TEXT NOT NULL,
            first_seen FLOAT8 NOT NULL,
            last_seen FLOAT8 NOT NULL,
            failures BIGINT NOT NULL,
            retries BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS failure_counts (
            width BIGINT NOT NULL,
            bucket BIGINT NOT NULL,
            fingerprint TEXT NOT NULL,
            name TEXT NOT NULL,
            failures BIGINT NOT NULL,
            retries BIGINT NOT NULL,
            PRIMARY KEY (width, bucket, fingerprint, name)
        );
        ALTER TABLE workers ADD COLUMN silent_since FLOAT8;
        ALTER TABLE workers ADD COLUMN tasks_failed BIGINT NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS finished_counts (
            width BIGINT NOT NULL,
            bucket BIGINT NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            tasks BIGINT NOT NULL,
            PRIMARY KEY (width, bucket, name, state)
        );
        CREATE TABLE IF NOT EXISTS duration_counts (
            width BIGINT NOT NULL,
            bucket BIGINT NOT NULL,
            name TEXT NOT NULL,
            metric TEXT NOT NULL,
            queue TEXT NOT NULL,
            slot BIGINT NOT NULL,
            runs BIGINT NOT NULL,
            total FLOAT8 NOT NULL,
            PRIMARY KEY (width, bucket, name, metric, queue, slot)
        );
        CREATE TABLE IF NOT EXISTS queue_backlog (
            queue TEXT PRIMARY KEY,
            waiting BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS schedules (
            name TEXT PRIMARY KEY,
            task TEXT NOT NULL,
            schedule TEXT NOT NULL,
            every FLOAT8,
            next_at FLOAT8,
            beat TEXT,
            first_seen FLOAT8 NOT NULL,
            reported_at FLOAT8 NOT NULL,
            last_sent_at FLOAT8,
            missed BIGINT NOT NULL DEFAULT 0
        );
        CREATE TABLE IF NOT EXISTS schedule_runs (
            task_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            sent_at FLOAT8 NOT NULL,
            due_at FLOAT8,
            missed BIGINT NOT NULL DEFAULT 0
        );
        CREATE INDEX IF NOT EXISTS schedule_runs_name ON schedule_runs (name, sent_at);
        INSERT INTO meta (key, value) SELECT 'stats_end', value FROM meta WHERE key = 'task_num'
        """,
        "adds columns (no row rewritten), builds three partial indexes over {tasks} tasks (each holds "
        "only the few rows it is for), rebuilds the per-flow index and builds three over the tasks of "
        "groups, creates an empty search index",
        refold=True,
        dialect_sql=SEARCH_DDL,
    ),
)
assert [step.version for step in STEPS] == list(range(OLDEST + 1, SCHEMA_VERSION + 1))

# Meta keys of a pending re-fold (store/backfill.py): the version whose fold it applies, the last task
# number done, the last task number to do, tasks re-folded so far, and when it started (epoch seconds).
REFOLD_KEYS = ("refold_schema", "refold_cursor", "refold_end", "refold_done", "refold_started")
_NEW_STORE_META = ("seq", "tasks", "events", "task_num", "event_num", "flow_num")


@dataclass
class Plan:
    """What opening a store does to it: the version found (None: no store yet) and the steps to run."""

    where: str
    found: int | None
    steps: list[Step]
    tasks: int = 0
    events: int = 0
    # A re-fold left unfinished by an earlier migration (tasks done so far), or None.
    refold_done: int | None = None

    @property
    def refold(self) -> bool:
        return any(step.refold for step in self.steps) or self.refold_done is not None

    def refold_in_background(self, mode: MigrateMode) -> bool:
        """True when the opener re-folds in a thread (store/backfill.py): an existing store in auto mode."""
        return mode == "auto" and self.found is not None and self.refold

    def describe(self) -> list[str]:
        """What `celery-flow migrate --dry-run` prints, one line each."""
        if self.found is None:
            return [f"{self.where} holds no celery-flow store yet: it is created at schema {SCHEMA_VERSION}"]
        if not self.steps and self.refold_done is None:
            return [f"{self.where} is at store schema {self.found}: nothing to do"]
        lines = [f"{self.where} is at store schema {self.found}"]
        if self.steps:
            lines[0] += f"; this celery-flow ({__version__}) writes schema {SCHEMA_VERSION}"
        for step in self.steps:
            cost = step.cost.format(tasks=f"{self.tasks:,}")
            lines.append(f"  step {step.version}: {step.summary}; under the migration lock: {cost}")
        if self.refold:
            resumed = f", resuming after {self.refold_done:,} done" if self.refold_done else ""
            lines.append(
                f"  re-fold: every task from its stored events ({self.tasks:,} tasks, {self.events:,} "
                f"events{resumed}), in batches, while the store keeps serving"
            )
        return lines


def open_schema(store: SqlStore, where: str, mode: MigrateMode = "auto") -> Plan:
    """Bring the store to SCHEMA_VERSION (or, in plan mode, say what that takes); see the module doc.

    Raises StoreError, before writing anything, for a store newer than this code or older than OLDEST.
    """
    dialect = dialect_of(store)
    plan = store._reading(lambda s: _plan(s, dialect, where))
    if mode == "plan":
        return plan
    if plan.found == SCHEMA_VERSION:
        # A write transaction that writes nothing: a store this process cannot write fails here, at
        # startup, with the engine's reason (a read-only standby, a read-only file).
        _in_transaction(store, lambda s: s.run(ddl(dialect)[0]))
        return plan
    began = time.monotonic()
    plan = _locked(store, where, lambda s: _migrate(s, dialect, where, plan))
    if plan.steps:
        more = "; re-folding every task from its events next" if plan.refold else ""
        log.info(
            "migrated %s to store schema %d in %.1f s%s",
            where,
            SCHEMA_VERSION,
            time.monotonic() - began,
            more,
        )
    return plan


def _table_exists(session: Session, dialect: Dialect, table: str) -> bool:
    if dialect == "sqlite":
        return bool(session.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)))
    return session.rows("SELECT to_regclass(?)", (table,))[0][0] is not None


def _plan(session: Session, dialect: Dialect, where: str) -> Plan:
    """Read the store's version and size; refuse a version this code cannot open."""
    if not _table_exists(session, dialect, "meta"):
        return Plan(where, None, [])
    meta = {str(key): int(value) for key, value in session.rows("SELECT key, value FROM meta")}
    if not meta:
        return Plan(where, None, [])
    # A store without a version key predates the version guard: schema 1.
    found = meta.get("schema", 1)
    if found > SCHEMA_VERSION:
        raise StoreError(_newer_message(session, dialect, where, found))
    if found < OLDEST:
        raise StoreError(
            f"{where} holds celery-flow store schema {found}, which only development builds before the "
            f"first release wrote; this version migrates schema {OLDEST} and later: point --store / "
            "CELERY_FLOW_STORE at a new file or database"
        )
    steps = [step for step in STEPS if step.version > found]
    refold_done = meta.get("refold_done") if meta.get("refold_schema") else None
    return Plan(where, found, steps, meta.get("tasks", 0), meta.get("events", 0), refold_done)


def _newer_message(session: Session, dialect: Dialect, where: str, found: int) -> str:
    needed = "a newer celery-flow"
    if _table_exists(session, dialect, "migrations"):
        rows = session.rows("SELECT app_version FROM migrations ORDER BY version DESC LIMIT 1")
        if rows:
            needed = f"celery-flow {rows[0][0]} or later"
    return (
        f"{where} holds celery-flow store schema {found}, newer than this celery-flow ({__version__}) "
        f"reads (schema {SCHEMA_VERSION}): run {needed}; this version leaves the store untouched"
    )


def _locked(store: SqlStore, where: str, work: Callable[[Session], R]) -> R:
    """Run `work` in one write transaction holding the migration lock, waiting for another holder."""
    if store.dialect == "postgresql":

        def locked(session: Session) -> R:
            session.run(f"SET LOCAL lock_timeout = '{MIGRATION_WAIT}s'")
            if not session.rows("SELECT pg_try_advisory_xact_lock(?)", (PG_LOCK_KEY,))[0][0]:
                _log_waiting(where)
                session.rows("SELECT pg_advisory_xact_lock(?)", (PG_LOCK_KEY,))
            return work(session)

        return _in_transaction(store, locked)
    conn = store._conn()  # SQLiteStore: this thread's connection
    usual = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
    try:
        if not getattr(store, "memory", False):
            # Probe the write lock without waiting, only to say why this process is about to wait.
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc):
                    _log_waiting(where)
        conn.execute(f"PRAGMA busy_timeout = {MIGRATION_WAIT * 1000}")
        return _in_transaction(store, work)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {usual}")


def _in_transaction(store: SqlStore, work: Callable[[Session], R]) -> R:
    """`work(session)` in one write transaction (the store may have no `meta` table yet)."""
    with store._write() as session:
        return work(session)


def _log_waiting(where: str) -> None:
    log.info("waiting (up to %d s) for the migration lock of %s, which another process holds (it may be "
             "migrating the store)", MIGRATION_WAIT, where)  # fmt: skip


def _migrate(session: Session, dialect: Dialect, where: str, before: Plan) -> Plan:
    """Under the lock: create the store, or run the steps from the version found now."""
    plan = _plan(session, dialect, where)
    if plan.found is None:
        _create(session, dialect)
        return plan
    if not plan.steps:
        if before.steps:
            log.info("%s was migrated to store schema %d by another process meanwhile", where, plan.found)
        return plan
    for step in plan.steps:
        log.info("migrating %s from store schema %d to %d: %s", where, step.version - 1, step.version,
                 step.summary)  # fmt: skip
        for statement in [*render(step.sql, dialect), *step.dialect_sql.get(dialect, ())]:
            session.run(statement)
        _record(session, step.version, step.summary)
    session.run("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
    if plan.refold:
        schedule_refold(session)
    return plan


def _create(session: Session, dialect: Dialect) -> None:
    for statement in ddl(dialect):
        session.run(statement)
    for key in _NEW_STORE_META:
        session.run("INSERT INTO meta (key, value) VALUES (?, 0) ON CONFLICT (key) DO NOTHING", (key,))
    session.run("INSERT INTO meta (key, value) VALUES ('schema', ?) ON CONFLICT (key) DO NOTHING",
                (SCHEMA_VERSION,))  # fmt: skip
    _record(session, SCHEMA_VERSION, f"created at schema {SCHEMA_VERSION}")


def _record(session: Session, version: int, summary: str) -> None:
    session.run(
        "INSERT INTO migrations (version, summary, applied_at, applied_by, app_version) "
        "VALUES (?, ?, ?, ?, ?)",
        (version, summary, time.time(), f"{socket.gethostname()}:{os.getpid()}", __version__),
    )


def schedule_refold(session: Session) -> None:
    """Start a re-fold of every task stored so far, from the first (again, if one was under way)."""
    end = int(session.rows("SELECT value FROM meta WHERE key = 'task_num'")[0][0])
    values = {"refold_schema": SCHEMA_VERSION, "refold_cursor": 0, "refold_end": end, "refold_done": 0,
              "refold_started": int(time.time())}  # fmt: skip
    for key in REFOLD_KEYS:
        session.run(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, values[key]),
        )


def applied(store: SqlStore) -> list[tuple[int, str, float, str, str, float | None]]:
    """The store's record of applied steps: (version, summary, applied_at, applied_by, app_version,
    refolded_at), oldest first."""
    rows = store._reading(
        lambda s: s.rows(
            "SELECT version, summary, applied_at, applied_by, app_version, refolded_at FROM migrations "
            "ORDER BY version"
        )
    )
    return [(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


def dialect_of(store: SqlStore) -> Dialect:
    return "postgresql" if store.dialect == "postgresql" else "sqlite"
