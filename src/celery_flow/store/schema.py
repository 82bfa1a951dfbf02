"""The one SQL schema both engines share.

Written once in the common subset of SQLite and PostgreSQL; `ddl(dialect)` only swaps the few type
names that differ (binary payloads, 64-bit integers, floats). Every list the API serves is a keyset walk
over one of the `(filter column, ts, id)` indexes below, newest first, so a page costs a few index
probes whatever the table size.

Tables:
- events: every stored task event, encoded (msgspec JSON), stored in arrival order (`enum`, the SQLite
  rowid) so each batch appends; the unique index on (task number, event id) gives idempotence (an event
  id always belongs to the same task) and a task's events for a re-fold (flow/fold.py) as one range.
  Tasks are numbered in the order they are first stored, so that index, too, grows at its end (a
  random task id as key would make each event dirty a page of its own).
- tasks: the folded summary of each task, `num` its insertion number (SQLite rowid); `ts` is when it
  was first known (the list order), `seq` the store-wide change number of its latest change (live push
  tails `seq`). `extra` holds the JSON of fields no query filters on (links, durations, timeline
  segments, pid, eta, expires).
- flows: one row per root workflow, kept up to date by `apply()` with state counts; `fnum` numbers flows
  in creation order. Tasks point at their flow by `fnum` and are indexed by (fnum, ts): a flow's tasks
  are one range, and new tasks land at the end of that index instead of at a random root id. The trace
  filter goes through flows (flows_trace) to their tasks for the same reason.
- name_stats: counts by state per task name, kept up to date the same way (registry).
- failure_clusters, failure_counts: failures and retries by cause (fingerprint), per cluster and per
  (bucket width, bucket, cluster, task name), kept up to date the same way (store/failures.py).
- finished_counts, duration_counts, queue_backlog: tasks finished by state and runtimes / queue waits
  by log-spaced duration slot per (bucket width, bucket, task name), and tasks waiting per queue, kept up
  to date the same way (store/stats.py).
- registry: what workers announced about each task name (signature, doc, which workers).
- workers: one row per worker hostname from worker.online / heartbeat / offline events.
- counters: consumer counters (rejected per kind, publisher drops) added in the same transaction.
- meta: store-wide numbers: the schema version, the change counter, row counts (so health never counts
  a big table) and the progress of a background re-fold (store/backfill.py).
- task_search: the search index of the words and key:value pairs in each task's arguments, result and
  error (store/search.py), one engine's own kind of index each, so its DDL lives there.
- schedules, schedule_runs: the entries of beat schedules as beat announces them, and the runs it sent
  (store/schedules.py).
- migrations: one row per schema version this store was created at or migrated to, with the
  celery-flow version that did it (store/migrations.py).
"""

from __future__ import annotations

import re
from typing import Literal

from celery_flow.store.search import DDL as SEARCH_DDL

Dialect = Literal["sqlite", "postgresql"]

# Every task state, in the order of the count columns of flows / name_stats: the states of schema 3
# first, then those schema 4 added (its columns were appended to the tables).
STATES = (
    "PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "REJECTED",
    "PLANNED", "NOT_RUN", "LOST",
)  # fmt: skip
V3_STATE_COUNT = 8
# Column name of the count of each state in flows / name_stats.
STATE_COLUMNS = {state: "n_" + state.lower() for state in STATES}


def _counts(states: tuple[str, ...]) -> str:
    return ",\n    ".join(f"{STATE_COLUMNS[state]} INTEGER NOT NULL DEFAULT 0" for state in states)


# The version this code writes; each bump comes with a step in store/migrations.py that brings an older
# store here. A store of a newer version is refused before anything is written to it.
SCHEMA_VERSION = 4

_DDL = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    enum BIGINT PRIMARY KEY,
    num BIGINT NOT NULL,
    id TEXT NOT NULL,
    ts FLOAT8 NOT NULL,
    data BINARY NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_task ON events (num, id);
CREATE TABLE IF NOT EXISTS tasks (
    num BIGINT PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    name TEXT,
    state TEXT NOT NULL,
    root_id TEXT NOT NULL,
    parent_id TEXT,
    group_id TEXT,
    chord_id TEXT,
    trace_id TEXT,
    hostname TEXT,
    queue TEXT,
    retries BIGINT NOT NULL DEFAULT 0,
    sent_at FLOAT8,
    received_at FLOAT8,
    started_at FLOAT8,
    finished_at FLOAT8,
    runtime FLOAT8,
    exception TEXT,
    updated_at FLOAT8,
    ts FLOAT8 NOT NULL,
    seq BIGINT NOT NULL,
    extra TEXT NOT NULL,
    fnum BIGINT NOT NULL,
    queue_wait FLOAT8,
    fingerprint TEXT
);
CREATE INDEX IF NOT EXISTS tasks_ts ON tasks (ts, task_id);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, ts, task_id);
-- Trailing columns let the engine check a second filter (state, worker) or read a runtime from the
-- index itself instead of fetching every row it passes over.
DROP INDEX IF EXISTS tasks_name;
DROP INDEX IF EXISTS tasks_flow;
DROP INDEX IF EXISTS tasks_host;
DROP INDEX IF EXISTS tasks_flow_host;
CREATE INDEX IF NOT EXISTS tasks_name_state ON tasks (name, ts, task_id, state, runtime, queue_wait);
CREATE INDEX IF NOT EXISTS tasks_flow_group ON tasks (fnum, ts, task_id, hostname, group_id);
CREATE INDEX IF NOT EXISTS tasks_host_state ON tasks (hostname, ts, task_id, state);
CREATE INDEX IF NOT EXISTS tasks_seq ON tasks (seq);
-- Partial indexes hold only the few rows they are for, so ordinary tasks pay nothing to keep them:
-- a failure cluster's tasks, a flow's planned steps, and what runs now on each worker.
CREATE INDEX IF NOT EXISTS tasks_fingerprint ON tasks (fingerprint, ts, task_id)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_planned ON tasks (fnum) WHERE state = 'PLANNED';
CREATE INDEX IF NOT EXISTS tasks_running ON tasks (hostname, started_at)
    WHERE state IN ('RECEIVED', 'STARTED');
-- A group's members, newest first and slowest first (store/members.py): keyset pages of a 100,000-task
-- fan-out and its summary (counts, percentiles, bounds) read from these alone, never row by row.
CREATE INDEX IF NOT EXISTS tasks_group_ts ON tasks (fnum, group_id, ts, task_id, state)
    WHERE group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_group_runtime ON tasks (
    fnum, group_id, runtime, task_id, state, retries, queue_wait, finished_at, chord_id, parent_id
) WHERE group_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_group_wait ON tasks (fnum, group_id, queue_wait, state, retries, task_id)
    WHERE group_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS flows (
    root_id TEXT PRIMARY KEY,
    root_name TEXT,
    state TEXT NOT NULL,
    trace_id TEXT,
    {_counts(STATES[:V3_STATE_COUNT])},
    task_count INTEGER NOT NULL DEFAULT 0,
    started_at FLOAT8,
    last_finished FLOAT8,
    updated_at FLOAT8,
    ts FLOAT8 NOT NULL,
    seq BIGINT NOT NULL,
    fnum BIGINT NOT NULL UNIQUE,
    {_counts(STATES[V3_STATE_COUNT:])}
);
CREATE INDEX IF NOT EXISTS flows_ts ON flows (ts, root_id);
CREATE INDEX IF NOT EXISTS flows_state ON flows (state, ts, root_id);
CREATE INDEX IF NOT EXISTS flows_name ON flows (root_name, ts, root_id);
CREATE INDEX IF NOT EXISTS flows_trace ON flows (trace_id, ts, root_id);
CREATE TABLE IF NOT EXISTS name_stats (
    name TEXT PRIMARY KEY,
    {_counts(STATES)}
);
CREATE TABLE IF NOT EXISTS registry (
    name TEXT PRIMARY KEY,
    signature TEXT,
    doc TEXT,
    workers TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    hostname TEXT PRIMARY KEY,
    online_since FLOAT8,
    last_heartbeat FLOAT8,
    offline_at FLOAT8,
    heartbeat_interval FLOAT8,
    pid BIGINT,
    tasks_run BIGINT NOT NULL DEFAULT 0,
    registered TEXT NOT NULL,
    info TEXT NOT NULL,
    silent_since FLOAT8,
    tasks_failed BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
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
CREATE TABLE IF NOT EXISTS migrations (
    version BIGINT PRIMARY KEY,
    summary TEXT NOT NULL,
    applied_at FLOAT8 NOT NULL,
    applied_by TEXT NOT NULL,
    app_version TEXT NOT NULL,
    refolded_at FLOAT8
);
"""

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"FLOAT8": "REAL", "BINARY": "BLOB", "BIGINT": "INTEGER"},
    # Byte-order collation: the same ordering as SQLite, and prefix ranges (`q`) that use the indexes.
    "postgresql": {
        "FLOAT8": "DOUBLE PRECISION",
        "BINARY": "BYTEA",
        "BIGINT": "BIGINT",
        "TEXT": 'TEXT COLLATE "C"',
    },
}

TASK_COLUMNS = (
    "task_id", "name", "state", "root_id", "parent_id", "group_id", "chord_id", "trace_id", "hostname",
    "queue", "retries", "sent_at", "received_at", "started_at", "finished_at", "runtime", "exception",
    "updated_at", "ts", "seq", "extra", "num", "fnum", "queue_wait", "fingerprint",
)  # fmt: skip
FLOW_COLUMNS = (
    "root_id", "root_name", "state", "trace_id", *list(STATE_COLUMNS.values())[:V3_STATE_COUNT], "task_count",
    "started_at", "last_finished", "updated_at", "ts", "seq", "fnum",
    *list(STATE_COLUMNS.values())[V3_STATE_COUNT:],
)  # fmt: skip
WORKER_COLUMNS = (
    "hostname", "online_since", "last_heartbeat", "offline_at", "heartbeat_interval", "pid", "tasks_run",
    "registered", "info", "silent_since", "tasks_failed",
)  # fmt: skip


def ddl(dialect: Dialect) -> list[str]:
    """The CREATE statements for one engine, one statement per item."""
    return [*render(_DDL, dialect), *SEARCH_DDL[dialect]]


def render(text: str, dialect: Dialect) -> list[str]:
    """`;`-separated statements in the generic type names (FLOAT8, BINARY, ...) for one engine."""
    for generic, concrete in _TYPES[dialect].items():
        text = re.sub(rf"(?<= ){generic}\b", concrete, text)
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def upsert(table: str, columns: tuple[str, ...], key: str) -> str:
    """`INSERT ... ON CONFLICT (key) DO UPDATE` of every column: the same text in both engines."""
    placeholders = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{column} = excluded.{column}" for column in columns if column != key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )
