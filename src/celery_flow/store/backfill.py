"""Re-fold every task from its stored events after a migration changed what the fold derives.

The events table is the source of truth; task rows, flows and per-name counts are derived from it. When
a new version derives something new or differently (a `Step` with `refold` in store/migrations.py), each
task stored before the migration is folded again by the new code, in task-number order, in batches:

- A batch is one write transaction holding the writers' lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: the
  meta.seq row, as apply() takes it). It reads the cursor (meta 'refold_cursor') and moves it in the same
  commit, so processes re-folding at once take turns on disjoint batches, and a process that stops
  loses at most the batch in flight: whichever process opens the store next resumes after the cursor.
- A task is folded from the events stored when its batch runs. A consumer's write either committed
  before (its events are folded in) or waits for the batch and then re-folds the task itself with the
  new code, so a batch never writes a state older than the stored one.
- The search index is not written here: rows keep their seq, and the fold of the same events gives
  the same tokens; a store migrated to schema 4 has its index filled by store/search.py's indexer,
  which starts from seq 0.
- The overview's counts (store/stats.py) of a store migrated to schema 4 are filled here: each batch
  counts its tasks as folded now (the consumer leaves rows not re-folded yet to it).
- Only rows that change are written, keeping their change number (seq): live clients are not sent
  every task again, and the consumer's cache of recent event sets (valid per seq) stays valid, since
  events are never touched. When a row's state, lineage or times change (a fold rule changed), its
  flow, per-name and per-worker counts follow, as in apply().
- In the background (server, consume) the thread rests PAUSE seconds per second of work, so the same
  process keeps answering requests; `celery-flow migrate` runs it in the foreground without rest.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from celery_flow.events import Event
from celery_flow.flow.fold import fold_task
from celery_flow.flow.model import TaskDetail
from celery_flow.store import lost, stats
from celery_flow.store.base import StoreError
from celery_flow.store.connection import Session, SqlConnections
from celery_flow.store.failures import stored_causes
from celery_flow.store.migrations import REFOLD_KEYS, STEPS
from celery_flow.store.rows import TASK_SELECT, TaskRow, fetch, task_row
from celery_flow.store.write import (
    HostRuns,
    TaskChange,
    apply_workers,
    count_host,
    event_decoder,
    update_counts,
    write_tasks,
)

log = logging.getLogger("celery_flow.store")

# Tasks per batch: one batch holds the write lock for a fraction of a second.
BATCH = 500
# Seconds the background thread rests per second of re-folding.
PAUSE = 0.5
# Tasks folded between two offers of the GIL to the other threads of the process.
YIELD_EVERY = 8
# Seconds between progress lines in the log.
LOG_EVERY = 10.0
# Seconds before the background thread tries again after the store failed.
RETRY_AFTER = 5.0

# The columns flows, per-name counts, per-worker counts, failure clusters or the stats (store/stats.py)
# are computed from.
_aggregated = attrgetter(
    "name", "state", "root_id", "parent_id", "group_id", "trace_id", "hostname", "ts", "finished_at",
    "updated_at", "fingerprint", "queue", "started_at", "runtime", "queue_wait",
)  # fmt: skip
_REFOLD_META = (
    "SELECT key, value FROM meta WHERE key IN ('schema', 'seq', "
    + ", ".join(f"'{key}'" for key in REFOLD_KEYS)
    + ")"
)


@dataclass
class RefoldProgress:
    """A re-fold under way: tasks done, an estimate of those left, and the pace so far."""

    schema: int
    done: int
    remaining: int
    percent: float
    started_at: float
    tasks_per_second: float | None = None
    seconds_left: float | None = None


@dataclass
class _Batch:
    count: int  # tasks re-folded by this batch
    finished: bool
    progress: RefoldProgress | None


def progress(store: SqlConnections[Any]) -> RefoldProgress | None:
    """The re-fold under way in this store, or None."""
    return _progress(store._reading(_meta))


def status(store: object) -> tuple[int, RefoldProgress | None] | None:
    """The schema version of a SQL store and its re-fold under way (None for other stores)."""
    if not isinstance(store, SqlConnections):
        return None
    meta = store._reading(_meta)
    return meta.get("schema", 0), _progress(meta)


def _meta(session: Session) -> dict[str, int]:
    return {str(key): int(value) for key, value in session.rows(_REFOLD_META)}


def _progress(meta: dict[str, int]) -> RefoldProgress | None:
    if not meta.get("refold_schema"):
        return None
    done = meta.get("refold_done", 0)
    # Task numbers left to pass: an estimate of the tasks left (retention deletes the oldest).
    remaining = max(0, meta.get("refold_end", 0) - meta.get("refold_cursor", 0))
    started = float(meta.get("refold_started", 0))
    elapsed = time.time() - started
    rate = done / elapsed if done and elapsed > 0 else None
    return RefoldProgress(
        schema=meta["refold_schema"],
        done=done,
        remaining=remaining,
        percent=round(100.0 * done / (done + remaining), 1) if done + remaining else 100.0,
        started_at=started,
        tasks_per_second=round(rate, 1) if rate else None,
        seconds_left=round(remaining / rate, 1) if rate else None,
    )


def refold_batch(store: SqlConnections[Any], limit: int = BATCH) -> _Batch | None:
    """Re-fold the next `limit` tasks in one transaction; None when no re-fold is pending."""
    return store._writing(lambda s, seq: _batch(s, seq, limit))


def _batch(s: Session, seq: int, limit: int) -> _Batch | None:
    meta = _meta(s)
    if not meta.get("refold_schema"):
        return None
    cursor, end = meta.get("refold_cursor", 0), meta.get("refold_end", 0)
    rows = fetch(
        s, TaskRow, TASK_SELECT + " WHERE num > ? AND num <= ? ORDER BY num LIMIT ?", (cursor, end, limit)
    )
    if not rows:
        _finish(s, meta)
        return _Batch(0, True, _progress(meta))
    last = int(rows[-1].num)
    events: dict[int, list[Event]] = {}
    for num, data in s.rows("SELECT num, data FROM events WHERE num > ? AND num <= ?", (cursor, last)):
        events.setdefault(int(num), []).append(event_decoder.decode(data))
    _rewrite(s, rows, events, seq)
    meta["refold_cursor"], meta["refold_done"] = last, meta.get("refold_done", 0) + len(rows)
    s.many(
        "UPDATE meta SET value = ? WHERE key = ?",
        [(last, "refold_cursor"), (meta["refold_done"], "refold_done")],
    )
    return _Batch(len(rows), False, _progress(meta))


def _rewrite(s: Session, rows: list[TaskRow], events: dict[int, list[Event]], seq: int) -> None:
    """Write the rows whose fold differs from the stored one; counts follow rows whose totals moved."""
    new_rows: list[TaskRow] = []
    moved: list[TaskChange] = []
    folded: list[tuple[TaskRow, TaskDetail]] = []
    for i, row in enumerate(rows):
        if i % YIELD_EVERY == 0:
            time.sleep(0)  # let a request thread of this process take the GIL now, not in 5 ms
        stored = events.get(int(row.num))
        if stored:  # never derive a task from nothing (a row is always stored with its events)
            folded.append((row, fold_task(row.task_id, stored)))
    lost.on_fold(s, [task for _, task in folded])  # the fold cannot know a worker went away
    _fill_stats(s, folded)
    for row, task in folded:
        new = task_row(task, row.seq, row.num, row.fnum)
        if new == row:
            continue
        if _aggregated(new) != _aggregated(row) or stored_causes(new) != stored_causes(row):
            moved.append(TaskChange(row, task))
        else:
            new_rows.append(new)
    if moved:
        host_runs: HostRuns = {}
        flows = update_counts(s, moved, seq, host_runs)
        for change in moved:
            old, task = change.old, change.new
            assert old is not None
            new_rows.append(task_row(task, old.seq, old.num, flows[task.root_id or task.task_id].fnum))
        if any(any(n) for n in host_runs.values()):
            apply_workers(s, [], {host: n for host, n in host_runs.items() if any(n)})
    if new_rows:
        write_tasks(s, new_rows, {row.task_id: row for row in rows})


def _fill_stats(s: Session, folded: list[tuple[TaskRow, TaskDetail]]) -> None:
    """Count in the stats tables and workers.tasks_failed the tasks they do not count yet (a store
    migrated to schema 4), as folded now; the cursor moves past them in the same transaction."""
    pending = stats.uncounted(s)
    if pending is None:
        return
    tasks = [task for row, task in folded if not stats.is_counted(int(row.num), pending)]
    stats.fill(s, tasks)
    host_runs: HostRuns = {}
    for task in tasks:
        count_host(host_runs, task.hostname, task.state, +1, runs=False)
    if any(any(n) for n in host_runs.values()):
        apply_workers(s, [], {host: n for host, n in host_runs.items() if any(n)})


def _finish(s: Session, meta: dict[str, int]) -> None:
    keys = (*REFOLD_KEYS, "stats_end")
    s.run(f"DELETE FROM meta WHERE key IN ({', '.join('?' for _ in keys)})", keys)
    versions = [step.version for step in STEPS if step.refold and step.version <= meta["refold_schema"]]
    if not versions:
        return
    s.run(
        f"UPDATE migrations SET refolded_at = ? WHERE refolded_at IS NULL AND version IN "
        f"({', '.join('?' for _ in versions)})",
        (time.time(), *versions),
    )


def run(
    store: SqlConnections[Any],
    stop: threading.Event | None = None,
    pause: float = 0.0,
    report: Callable[[RefoldProgress, bool], None] | None = None,
    every: float = LOG_EVERY,
    limit: int = BATCH,
) -> int:
    """Re-fold until done (or `stop` is set), resting `pause` s per s of work; return the tasks done here.

    `report(progress, finished)` is called at most every `every` seconds, and with finished=True once
    this call has finished the re-fold.
    """
    done = 0
    last_report = time.monotonic()
    while stop is None or not stop.is_set():
        began = time.monotonic()
        batch = refold_batch(store, limit)
        if batch is None:
            return done
        done += batch.count
        if batch.finished:
            if report is not None and batch.progress is not None:
                report(batch.progress, True)
            return done
        if report is not None and batch.progress is not None and time.monotonic() - last_report >= every:
            report(batch.progress, False)
            last_report = time.monotonic()
        if pause > 0:
            rest = pause * (time.monotonic() - began)
            if stop is not None:
                stop.wait(rest)
            else:
                time.sleep(rest)
    return done


def describe(p: RefoldProgress, finished: bool) -> str:
    """One progress line: for the log, and for `celery-flow migrate`."""
    if finished:
        took = time.time() - p.started_at
        return f"re-fold for store schema {p.schema} finished: {p.done:,} tasks in {took:.0f} s"
    pace = f", {p.tasks_per_second:,.0f} tasks/s" if p.tasks_per_second else ""
    return (
        f"re-folding tasks for store schema {p.schema}: {p.done:,} done, about {p.remaining:,} left "
        f"({p.percent:.0f}%){pace}"
    )


def log_progress(p: RefoldProgress, finished: bool) -> None:
    log.info("%s", describe(p, finished))


class _Background:
    """The re-fold of one open store, in a daemon thread stopped by the store's close()."""

    def __init__(self, store: SqlConnections[Any]) -> None:
        self.store = store
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="celery-flow-refold", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                run(self.store, self.stop, PAUSE, log_progress)
                return
            except StoreError as exc:
                if self.stop.is_set():
                    return
                log.warning("re-fold paused, the store failed (retrying in %.0f s): %s", RETRY_AFTER, exc)
            except Exception:  # a bug must not end the process the re-fold runs in
                log.exception("re-fold failed (retrying in %.0f s)", RETRY_AFTER)
            self.stop.wait(RETRY_AFTER)


_running: weakref.WeakKeyDictionary[SqlConnections[Any], _Background] = weakref.WeakKeyDictionary()
_running_lock = threading.Lock()


def start_background(store: SqlConnections[Any]) -> None:
    """Re-fold in a thread of this process until done or until the store is closed."""
    with _running_lock:
        if store in _running:
            return
        job = _running[store] = _Background(store)
    log.info("re-folding every task from its stored events in the background (progress: /api/health)")
    job.thread.start()


def stop_background(store: SqlConnections[Any], timeout: float = 30.0) -> None:
    """Stop the store's re-fold thread, letting the batch in flight commit (engines call this on close)."""
    with _running_lock:
        job = _running.pop(store, None)
    if job is None:
        return
    job.stop.set()
    if job.thread is not threading.current_thread():
        job.thread.join(timeout)
