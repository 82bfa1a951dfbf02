"""Periodic tasks: the entries of beat schedules and the runs beat sent, late and missed runs, beat down.

What is stored are facts from beat's events (tracking/beat.py, docs/schedules.md): each entry as beat
last announced it (`schedules`: task, schedule in words, `every` seconds between runs, `next_at`, which
beat), and each run it sent (`schedule_runs`: the task id, when it was sent and due, and how many runs came
due before it that beat never sent). What depends on the clock and the grace period is judged when read:

- late: the entry's next run is overdue by more than `grace` seconds;
- missed: the runs beat reported missed (due while it was down, skipped when it sent the overdue run late
  on coming back), and those it gave up on (back with a fresh schedule file, it announced a next run in the
  future while one was overdue), plus, while the entry is late, the due times after the overdue one that
  passed more than `grace` ago (the overdue one itself is expected to go out late);
- beat down: the beat that announced the entry went offline or fell silent (store/lost.py's rule).

A run is deleted with its task (store/retention.py), so `runs` and `failures` count the runs kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL, Event, ScheduleInfo
from celery_flow.flow.model import TaskState
from celery_flow.settings import DEFAULT_SCHEDULE_GRACE
from celery_flow.store.connection import Session, chunks, in_list, select_in
from celery_flow.store.lost import is_gone, last_heard
from celery_flow.store.rows import WORKER_SELECT, WorkerRow, fetch, fetch_in, json_decoder, select
from celery_flow.store.schema import upsert

# Seconds an entry's next run may be overdue before it is late, unless configured (--schedule-grace).
DEFAULT_GRACE = DEFAULT_SCHEDULE_GRACE
# Runs listed per entry (the strip of the Schedules page).
RECENT_RUNS = 30


class ScheduleRow(NamedTuple):
    """A row of `schedules`."""

    name: str
    task: str
    schedule: str
    every: float | None
    next_at: float | None
    beat: str | None
    first_seen: float
    reported_at: float
    last_sent_at: float | None
    missed: int


_SELECT = select(ScheduleRow._fields, "schedules")
_UPSERT = upsert("schedules", ScheduleRow._fields, "name")


@dataclass
class ScheduleRunView:
    """One run beat sent: its task, when it was sent and due, the task's state now, whether it went out
    more than the grace period after it was due, and the runs due before it that were never sent."""

    task_id: str
    sent_at: float
    due_at: float | None
    state: TaskState | None
    late: bool
    missed_before: int


@dataclass
class ScheduleView:
    """One beat schedule entry: see the module docstring for `late`, `missed` and `beat_up`."""

    name: str
    task: str
    schedule: str
    # Seconds between runs (for crontab and solar schedules, between the next two).
    every: float | None
    first_seen: float
    last_sent_at: float | None
    expected_next_at: float | None
    # Runs kept (they go with their tasks' retention) and how many of them failed.
    runs: int
    failures: int
    late: bool
    # Seconds the next run is overdue (0 when not).
    overdue: float
    missed: int
    # Missed since the last run sent (while late), included in `missed`.
    missed_now: int
    beat: str | None
    # Whether the beat that announced this entry is up (None: no beat announced it).
    beat_up: bool | None
    # The newest runs first, at most RECENT_RUNS.
    recent: list[ScheduleRunView] = field(default_factory=list)


@dataclass
class BeatView:
    """A beat process, as a worker: up or down, and when it was last heard."""

    hostname: str
    up: bool
    last_heard: float | None


@dataclass
class Schedules:
    """Every entry, by name; the beats; `beat_down` when entries exist and no beat that announced them is
    up; `grace` the seconds overdue after which an entry is late."""

    items: list[ScheduleView]
    beats: list[BeatView]
    beat_down: bool
    late: int
    missed: int
    grace: float


# -- write path (write.py apply_batch) ----------------------------------------------------------------


def apply(session: Session, task_events: Sequence[Event], worker_events: Sequence[Event]) -> None:
    """Fold beat's announcements (worker events with `schedules`) and the runs it sent (`sent` events with
    `schedule`) into `schedules` and `schedule_runs`; a run already stored changes nothing."""
    announced = [e for e in worker_events if e.schedules is not None and e.hostname]
    sent = [e for e in task_events if e.type == "sent" and e.schedule is not None and e.task_id]
    if not announced and not sent:
        return
    names = {i.name for e in announced for i in e.schedules or ()} | {
        e.schedule.entry for e in sent if e.schedule is not None
    }
    entries = {
        r.name: r for r in fetch_in(session, ScheduleRow, _SELECT + " WHERE name IN {}", sorted(names))
    }
    known = {
        r[0]
        for r in select_in(
            session,
            "SELECT task_id FROM schedule_runs WHERE task_id IN {}",
            sorted({e.task_id or "" for e in sent}),
        )
    }
    runs = []
    # In time order: whether beat gave up on an overdue run depends on what it said before.
    for event in sorted([*announced, *sent], key=lambda e: e.ts):
        run = event.schedule
        if run is None:
            for info in event.schedules or ():
                _announce(entries, info, event)
            continue
        assert event.task_id
        if event.task_id in known:
            continue
        known.add(event.task_id)
        runs.append((event.task_id, run.entry, event.ts, run.due, run.missed))
        old = entries.get(run.entry)
        if old is None:  # sent before beat's announcement arrived: what the run says of it, for now
            old = ScheduleRow(run.entry, event.name or "", "", None, None, None, event.ts, 0.0, None, 0)
        fresher = event.ts >= old.reported_at
        entries[run.entry] = old._replace(
            last_sent_at=max(old.last_sent_at or event.ts, event.ts),
            missed=int(old.missed) + run.missed,
            next_at=run.next_at if fresher and run.next_at is not None else old.next_at,
            reported_at=event.ts if fresher else old.reported_at,
        )
    if runs:
        session.many(
            "INSERT INTO schedule_runs (task_id, name, sent_at, due_at, missed) VALUES (?, ?, ?, ?, ?)", runs
        )
    session.many(_UPSERT, [entries[name] for name in sorted(entries)])
    for event in announced:
        # An entry this beat no longer announces was removed from its schedule: it goes, with its runs.
        listed = {i.name for i in event.schedules or ()}
        rows = session.rows(
            "SELECT name FROM schedules WHERE beat = ? AND reported_at < ?", (event.hostname, event.ts)
        )
        for (name,) in rows:
            if name not in listed:
                session.run("DELETE FROM schedules WHERE name = ?", (name,))
                session.run("DELETE FROM schedule_runs WHERE name = ?", (name,))


def _announce(entries: dict[str, ScheduleRow], info: ScheduleInfo, event: Event) -> None:
    """What a beat says of one entry, over what was stored. When the entry was overdue and beat now puts
    its next run in the future, beat gave up on the overdue runs (a fresh schedule file): they are missed."""
    old = entries.get(info.name)
    if old is not None and old.reported_at > event.ts:
        return
    missed = int(old.missed) if old else 0
    if old is not None and old.next_at is not None and old.next_at < event.ts < (info.next_at or 0.0):
        missed += math.floor((event.ts - old.next_at) / old.every) + 1 if old.every else 1
    entries[info.name] = ScheduleRow(
        name=info.name, task=info.task, schedule=info.schedule, every=info.interval, next_at=info.next_at,
        beat=event.hostname, first_seen=old.first_seen if old else event.ts, reported_at=event.ts,
        last_sent_at=old.last_sent_at if old else None, missed=missed,
    )  # fmt: skip


def forget_runs(session: Session, task_ids: Sequence[str]) -> None:
    """Retention: the runs of deleted tasks go with them."""
    for chunk in chunks(task_ids):
        session.run(f"DELETE FROM schedule_runs WHERE task_id IN {in_list(chunk)}", chunk)


# -- reads ---------------------------------------------------------------------------------------------


def read(
    session: Session,
    now: float,
    grace: float = DEFAULT_GRACE,
    name: str | None = None,
    recent: int = RECENT_RUNS,
    default_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    counts: bool = True,
) -> Schedules:
    """Every schedule entry (or the one called `name`) judged at `now` with `grace` seconds of grace: its
    runs and failures (left 0 unless `counts`: they read every run kept), late, missed, next expected run
    and its `recent` newest runs; and the beats."""
    where, params = (" WHERE name = ?", (name,)) if name is not None else ("", ())
    rows = fetch(session, ScheduleRow, _SELECT + where + " ORDER BY name", params)
    announcers = {r.beat for r in rows}
    beats = [w for w in fetch(session, WorkerRow, WORKER_SELECT) if w.hostname in announcers or _is_beat(w)]
    up = {w.hostname: not is_gone(w, default_interval, now) for w in beats}
    totals = {
        str(r[0]): (int(r[1]), int(r[2] or 0))
        for r in (session.rows(
            "SELECT r.name, COUNT(*), SUM(CASE WHEN t.state = 'FAILURE' THEN 1 ELSE 0 END) "
            "FROM schedule_runs r LEFT JOIN tasks t ON t.task_id = r.task_id"
            + where.replace("name", "r.name")
            + " GROUP BY r.name",
            params,
        ) if counts else [])
    }  # fmt: skip
    items = []
    for row in rows:
        runs, failures = totals.get(row.name, (0, 0))
        overdue = max(0.0, now - row.next_at) if row.next_at is not None else 0.0
        late = overdue > grace
        missed_now = 0
        if late and row.every and row.next_at is not None:
            missed_now = max(0, math.floor((now - grace - row.next_at) / row.every))
        items.append(
            ScheduleView(
                name=row.name,
                task=row.task,
                schedule=row.schedule,
                every=row.every,
                first_seen=row.first_seen,
                last_sent_at=row.last_sent_at,
                expected_next_at=row.next_at,
                runs=runs,
                failures=failures,
                late=late,
                overdue=overdue,
                missed=int(row.missed) + missed_now,
                missed_now=missed_now,
                beat=row.beat,
                beat_up=up.get(row.beat) if row.beat else None,
                recent=_recent(session, row.name, grace, recent) if recent else [],
            )
        )
    beat_down = bool(items) and not any(up.get(i.beat or "") for i in items)
    return Schedules(
        items=items,
        beats=[
            BeatView(w.hostname, up[w.hostname], last_heard(w))
            for w in sorted(beats, key=lambda w: w.hostname)
        ],
        beat_down=beat_down,
        late=sum(1 for i in items if i.late),
        missed=sum(i.missed for i in items),
        grace=grace,
    )


def _is_beat(w: WorkerRow) -> bool:
    try:
        info = json_decoder.decode(w.info)
    except ValueError:
        return False
    return isinstance(info, dict) and info.get("role") == "beat"


def _recent(session: Session, name: str, grace: float, limit: int) -> list[ScheduleRunView]:
    rows = session.rows(
        "SELECT r.task_id, r.sent_at, r.due_at, t.state, r.missed FROM schedule_runs r "
        "LEFT JOIN tasks t ON t.task_id = r.task_id WHERE r.name = ? ORDER BY r.sent_at DESC LIMIT ?",
        (name, limit),
    )
    return [
        ScheduleRunView(
            task_id=str(task_id),
            sent_at=float(sent_at),
            due_at=due_at,
            state=state,
            late=due_at is not None and sent_at - due_at > grace,
            missed_before=int(missed or 0),
        )
        for task_id, sent_at, due_at, state, missed in rows
    ]
