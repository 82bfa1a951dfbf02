"""What a beat process says of its entries and runs (tracking/beat.py), from Celery's own schedules."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from celery import Celery
from celery.beat import ScheduleEntry
from celery.schedules import crontab, schedule

from celery_flow.tracking.beat import describe, run_of, schedule_of

APP = Celery("beat_entries", set_as_current=False)


def entry(sched: object, last_run_ago: float, now: float) -> ScheduleEntry:
    last = datetime.fromtimestamp(now - last_run_ago, tz=timezone.utc)
    return ScheduleEntry(name="e", task="t.x", last_run_at=last, schedule=sched, app=APP)


def test_schedules_in_words() -> None:
    assert describe(schedule(timedelta(seconds=2))) == "every 2s"
    assert describe(crontab(minute="0", hour="4")) == "crontab(0 4 * * *)"


def test_an_interval_entry_on_time_has_its_next_run_one_interval_after_the_last() -> None:
    now = datetime.now(timezone.utc).timestamp()
    every, next_at = schedule_of(entry(schedule(timedelta(seconds=60)), 20, now), now)
    assert every == 60
    assert next_at is not None
    assert abs(next_at - (now + 40)) < 1
    run = run_of(entry(schedule(timedelta(seconds=60)), 60, now), now)
    assert run.missed == 0
    assert run.due is not None
    assert abs(run.due - now) < 1


def test_a_run_sent_after_beat_was_down_says_how_many_came_due_meanwhile() -> None:
    # Last run 10.5 s ago, every 2 s: due 8.5 s ago (this run, late), then 6.5, 4.5, 2.5 and 0.5 s ago.
    now = datetime.now(timezone.utc).timestamp()
    run = run_of(entry(schedule(timedelta(seconds=2)), 10.5, now), now)
    assert run.missed == 4
    assert run.due is not None
    assert abs(run.due - (now - 8.5)) < 0.1
    assert run.next_at is not None
    assert abs(run.next_at - (now + 2)) < 0.1


def test_a_crontab_entry_has_an_interval_and_a_next_run() -> None:
    now = datetime.now(timezone.utc).timestamp()
    every, next_at = schedule_of(entry(crontab(minute="*/5"), 60, now), now)
    assert every is not None
    assert abs(every - 300) < 1
    assert next_at is not None
    assert now <= next_at <= now + 300
    # Last run 15 minutes before the latest 5-minute mark: this run was due 10 minutes before that mark,
    # and the 2 due times since (5 minutes before it, and the mark) passed unsent.
    mark = (now // 300) * 300
    run = run_of(entry(crontab(minute="*/5"), now - (mark - 900), now), now)
    assert run.missed == 2
    assert run.due is not None
    assert abs(run.due - (mark - 600)) < 1


def test_a_crontab_entry_due_right_now_keeps_its_cadence() -> None:
    # 30 s past a 5-minute mark whose run beat has not sent yet: the cadence is still 5 minutes.
    now = 1_800_000_030.0  # a 5-minute mark (a multiple of 300) plus 30 s
    clock = datetime.fromtimestamp(now, tz=timezone.utc)
    cron = crontab(minute="*/5", nowfun=lambda: clock)
    every, next_at = schedule_of(entry(cron, 90, now), now)
    assert every is not None
    assert abs(every - 300) < 1
    assert next_at == now  # due: beat sends it at its next tick
