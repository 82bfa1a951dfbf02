"""LOST: a task received or started on a worker that went away, with no final event of its own.

A worker goes away when it says so (`worker.offline`) or when nothing is heard from it for
SILENT_INTERVALS times the heartbeat interval it announced. `check` judges silence (it alone reads the
clock) and records it in `workers.silent_since`, so the write path applies one rule to stored facts,
whatever order events arrive in: a task RECEIVED or STARTED on a worker is LOST when that worker went
away at or after the task's latest event (a worker that came back since does not revive it; a task it
received after coming back is not touched). The rule runs:

- when a task folds (`on_fold`, from write.py and the re-fold in backfill.py);
- when a worker.offline is folded, over that worker's running tasks (write.py `mark_lost`);
- in `check`, every few seconds from the consumer, over the running tasks of workers gone silent.

A LOST task keeps its events: a later real one (an `acks_late` redelivery run elsewhere) re-folds it to
what it says, and a late event from the dead worker itself re-folds it to LOST again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.flow.fold import segment_durations
from celery_flow.flow.model import TaskDetail
from celery_flow.store.connection import Session
from celery_flow.store.rows import (
    WORKER_SELECT,
    TaskRow,
    WorkerRow,
    fetch,
    fetch_in,
    task_from_row,
)

# Heartbeat intervals without a heartbeat after which a worker is gone (the workers page agrees), and
# never under MIN_SILENCE seconds: a busy machine can delay a sub-second heartbeat that long.
SILENT_INTERVALS = 3
MIN_SILENCE = 2.0
RUNNING = frozenset({"RECEIVED", "STARTED"})
# Seconds between two checks: a fraction of the smallest announced interval, within these bounds.
CHECK_MIN, CHECK_MAX = 0.5, 5.0
RUNNING_SQL = "state IN ('RECEIVED', 'STARTED')"  # the WHERE of the partial index tasks_running


@dataclass(frozen=True)
class Gone:
    """One going away of a worker: when, what was last heard before, and its interval if it fell silent."""

    hostname: str
    at: float
    last_heard: float | None
    silent_interval: float | None = None

    @property
    def reason(self) -> str:
        """Why the tasks it held are LOST, in words."""
        if self.silent_interval is None:
            # Its offline event is the last thing heard from it (and a heartbeat arriving after the
            # verdict must not make the words depend on arrival order).
            return f"worker {self.hostname} went offline at {_clock(self.at)}"
        return (
            f"no heartbeat from worker {self.hostname} since {_clock(self.last_heard)}: "
            f"{SILENT_INTERVALS} x its {self.silent_interval:g} s interval passed"
        )


def _clock(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts or 0.0))


def silent_window(interval: float) -> float:
    """Seconds without a heartbeat after which a worker with this interval is gone."""
    return max(SILENT_INTERVALS * interval, MIN_SILENCE)


def last_heard(w: WorkerRow) -> float | None:
    """The newest sign of life of a worker: its online event or last heartbeat."""
    return max((t for t in (w.online_since, w.last_heartbeat) if t is not None), default=None)


def is_gone(w: WorkerRow, default_interval: float, now: float) -> bool:
    """Gone now: offline and not back since, or silent for longer than its window (the workers page)."""
    alive = last_heard(w)
    if w.offline_at is not None and (alive is None or w.offline_at >= alive):
        return True
    return _silent_now(w, default_interval, now) is not None


def _silent_now(w: WorkerRow, default_interval: float, now: float) -> Gone | None:
    """The silence `w` is in now (not offline, no heartbeat for longer than its window), if any."""
    alive = last_heard(w)
    interval = w.heartbeat_interval or default_interval
    if alive is None or now - alive <= silent_window(interval):
        return None
    if w.offline_at is not None and w.offline_at >= alive:
        return None
    return Gone(w.hostname, alive + silent_window(interval), alive, interval)


def goings(w: WorkerRow, default_interval: float, now: float | None = None) -> list[Gone]:
    """The going aways stored for `w` (its latest offline, its recorded silence) and, given `now`, the
    silence it is in now."""
    interval = w.heartbeat_interval or default_interval
    out = []
    if w.offline_at is not None:
        out.append(Gone(w.hostname, w.offline_at, w.offline_at))
    if w.silent_since is not None:
        out.append(Gone(w.hostname, w.silent_since + silent_window(interval), w.silent_since, interval))
    silent = _silent_now(w, default_interval, now) if now is not None else None
    if silent is not None and silent.last_heard != w.silent_since:
        out.append(silent)
    return out


def lost_by(state: str, updated_at: float | None, gones: Sequence[Gone]) -> Gone | None:
    """The first going away of its worker at or after a running task's latest event, if any."""
    if state not in RUNNING:
        return None
    after = [g for g in gones if updated_at is None or g.at >= updated_at]
    return min(after, key=lambda g: g.at, default=None)


def mark(task: TaskDetail, g: Gone) -> None:
    """Make `task` LOST: the reason, finished when its worker went away, its open segment closed there."""
    task.state = "LOST"
    task.reason = g.reason
    task.finished_at = g.at
    _close(task, g.at)


def _close(task: TaskDetail, at: float) -> None:
    if task.segments and task.segments[-1].end is None:
        task.segments[-1].end = max(task.segments[-1].start, at)
        task.durations = segment_durations(task.segments)


def overlay(task: TaskDetail, row: TaskRow) -> None:
    """Carry a stored LOST verdict onto a task re-folded from its events (the fold cannot know it)."""
    if row.state != "LOST" or task.state not in RUNNING:
        return
    task.state = "LOST"
    task.reason = task_from_row(row).reason
    task.finished_at = row.finished_at
    if row.finished_at is not None:
        _close(task, row.finished_at)


def on_fold(session: Session, tasks: Iterable[TaskDetail]) -> None:
    """Mark LOST, in place, the tasks just folded to RECEIVED/STARTED on a worker that went away since."""
    running = [t for t in tasks if t.state in RUNNING and t.hostname]
    if not running:
        return
    gones = stored_goings(session, sorted({t.hostname for t in running if t.hostname}))
    for task in running:
        g = lost_by(task.state, task.updated_at, gones.get(task.hostname or "", ()))
        if g is not None:
            mark(task, g)


def stored_goings(session: Session, hosts: Sequence[str]) -> dict[str, list[Gone]]:
    """The going aways stored for `hosts` (no clock read: the same answer on every server)."""
    rows = fetch_in(session, WorkerRow, WORKER_SELECT + " WHERE hostname IN {}", hosts)
    return {w.hostname: g for w in rows if (g := goings(w, DEFAULT_HEARTBEAT_INTERVAL))}


def due(session: Session, default_interval: float, now: float) -> tuple[dict[str, list[Gone]], float]:
    """The workers gone now that still hold running tasks, with their going aways, and the seconds until
    the next check is due (half the smallest interval of the workers still here, within bounds)."""
    workers = fetch(session, WorkerRow, WORKER_SELECT)
    gone_now = {w.hostname: w for w in workers if is_gone(w, default_interval, now)}
    intervals = [w.heartbeat_interval or default_interval for w in workers if w.hostname not in gone_now]
    next_in = min(CHECK_MAX, max(CHECK_MIN, min(intervals, default=default_interval) / 2))
    if not gone_now:
        return {}, next_in
    holding = {r[0] for r in session.rows(f"SELECT DISTINCT hostname FROM tasks WHERE {RUNNING_SQL}")}
    return {h: goings(w, default_interval, now) for h, w in gone_now.items() if h in holding}, next_in


def record_silence(session: Session, default_interval: float, now: float) -> dict[str, list[Gone]]:
    """Record the silence of workers gone silent now; return the going aways of every worker gone now
    that holds running tasks, for write.mark_lost (in the same transaction: several servers on one store
    may check at once, the later finds nothing left to do)."""
    gones, _ = due(session, default_interval, now)
    recorded = {
        w.hostname: w.silent_since
        for w in fetch_in(session, WorkerRow, WORKER_SELECT + " WHERE hostname IN {}", sorted(gones))
    }
    silent = [
        (g.last_heard, g.silent_interval, host)
        for host, found in gones.items()
        for g in found
        if g.silent_interval is not None and g.last_heard != recorded.get(host)
    ]
    if silent:
        # The interval it was judged by goes with it, so the write path judges alike without a default.
        session.many("UPDATE workers SET silent_since = ?, heartbeat_interval = ? WHERE hostname = ?", silent)
    return gones
