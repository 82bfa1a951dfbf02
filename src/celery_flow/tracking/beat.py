"""Beat side: with `init(app)` in a `celery beat` process, the beat is a worker of its own (`beat@host`):
`worker.online`, a `worker.heartbeat` every CELERY_FLOW_HEARTBEAT_INTERVAL seconds and `worker.offline`,
each carrying the whole schedule (entry name, task, schedule in words, interval, next run), and every
task it sends marks its `sent` event with the entry, when that run was due and the runs that came due
while beat was down (docs/schedules.md).

It hooks Celery's `beat_init` signal, then wraps two methods of that beat's scheduler instance: its
`apply_async` (every run goes through it, from `tick()` or remote control) and its `close` (called once
when beat shuts down).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL, MAX_SCHEDULES, ScheduleInfo, ScheduleRun
from celery_flow.tracking.hooks import Tracker, _log, tracker_for_app

__all__ = ["connect_beat", "describe", "schedule_of"]

# Most due times counted when working out how many runs beat missed (a years-long outage stops there).
_MISSED_LIMIT = 10_000
_connected = False


def connect_beat() -> None:
    """Hook `beat_init`: a beat process started after `init(app)` reports its schedule and its runs."""
    global _connected
    if _connected:
        return
    from celery import signals

    signals.beat_init.connect(_beat_started, weak=False, dispatch_uid="celery_flow.beat_init")
    _connected = True


def _beat_started(sender: Any = None, **_: Any) -> None:
    try:
        app = sender.app
        if tracker_for_app(app) is None:
            return
        _BeatWatch(app, sender).start()
    except Exception as exc:  # never break beat's startup
        _log.warning("beat", "celery-flow: beat hook failed to start (ignored): %r", exc)


def _nodename(service: Any) -> str:
    try:
        from celery.beat import beat_nodename  # Celery 5.7+: the name beat answers remote control on

        return str(beat_nodename(service.hostname))
    except ImportError:
        import socket

        return f"celerybeat@{service.hostname or socket.gethostname()}"


class _BeatWatch(threading.Thread):
    """The beat's online / heartbeat / offline, and the wrappers marking its runs."""

    def __init__(self, app: Any, service: Any) -> None:
        super().__init__(name="celery-flow-beat-heartbeat", daemon=True)
        self.app = app
        self.scheduler = service.scheduler
        self.hostname = _nodename(service)
        self.info = _beat_info(service)
        self.stopped = threading.Event()

    def tracker(self) -> Tracker | None:
        return tracker_for_app(self.app)

    def start(self) -> None:
        self._wrap()
        tracker = self.tracker()
        if tracker is None:
            return
        tracker.publisher.hostname = self.hostname
        self._emit(tracker, "worker.online")
        super().start()

    def run(self) -> None:
        tracker = self.tracker()
        interval = tracker.heartbeat_interval if tracker is not None else DEFAULT_HEARTBEAT_INTERVAL
        while not self.stopped.wait(interval):
            tracker = self.tracker()
            if tracker is None:
                continue  # between a shutdown() and an init()
            interval = tracker.heartbeat_interval
            with contextlib.suppress(Exception):  # never let the heartbeat thread die noisily
                self._emit(tracker, "worker.heartbeat")

    def _emit(self, tracker: Tracker, type_: Any) -> None:
        tracker.emit(
            type_,
            hostname=self.hostname,
            pid=os.getpid(),
            info=self.info,
            heartbeat_interval=tracker.heartbeat_interval,
            schedules=entries_of(self.scheduler),
        )

    def _wrap(self) -> None:
        scheduler = self.scheduler
        apply_async = scheduler.apply_async
        close = scheduler.close
        watch = self

        def apply_async_marked(entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
            tracker = watch.tracker()
            if tracker is None:
                return apply_async(entry, producer, advance, **kwargs)
            try:
                tracker.beat_run = (threading.get_ident(), run_of(entry))
            except Exception as exc:
                _log.warning("beat", "celery-flow: beat run not marked (ignored): %r", exc)
            try:
                return apply_async(entry, producer, advance, **kwargs)
            finally:
                tracker.beat_run = None

        def close_reported() -> Any:
            try:
                watch.stopped.set()
                tracker = watch.tracker()
                if tracker is not None:
                    tracker.emit("worker.offline", hostname=watch.hostname, pid=os.getpid())
                    tracker.publisher.flush(2.0)
            except Exception as exc:
                _log.warning("beat", "celery-flow: beat offline not reported (ignored): %r", exc)
            return close()

        scheduler.apply_async = apply_async_marked
        scheduler.close = close_reported


def _beat_info(service: Any) -> dict[str, Any]:
    import celery

    info: dict[str, Any] = {"role": "beat", "celery": celery.__version__}
    with contextlib.suppress(Exception):  # informational only
        cls = type(service.scheduler)
        info["scheduler"] = f"{cls.__module__}.{cls.__qualname__}"
    return info


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _next_after(schedule: Any, last: float, now: float) -> float:
    """When `schedule` is due next after a run at `last` (epoch seconds), as Celery estimates it."""
    return now + float(schedule.remaining_estimate(_utc(last)).total_seconds())


def _following(schedule: Any, at: float, now: float) -> float:
    """The due time after the one at `at`. Celery's crontab takes a run at a due minute itself as still
    due (its next is the same minute): then the next after a second later."""
    following = _next_after(schedule, at, now)
    if following <= at + 0.5:
        following = _next_after(schedule, at + 1.0, now)
    return following


def _epoch(value: Any, now: float) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return float(value.timestamp())
    return now


def schedule_of(entry: Any, now: float | None = None) -> tuple[float | None, float | None]:
    """(seconds between runs, when next due) of a beat entry; None where Celery cannot tell."""
    now = time.time() if now is None else now
    schedule = entry.schedule
    last = _epoch(entry.last_run_at, now)
    try:
        next_at = _next_after(schedule, last, now)
    except Exception:
        return None, None
    interval: float | None = None
    run_every = getattr(schedule, "run_every", None)
    if run_every is not None and hasattr(run_every, "total_seconds"):
        interval = float(run_every.total_seconds())
    else:
        # From the due time itself: an overdue one's following due time is a whole cadence after it.
        with contextlib.suppress(Exception):
            interval = _following(schedule, next_at, now) - next_at
    return (interval if interval and interval > 0 else None), max(next_at, now)


def run_of(entry: Any, now: float | None = None) -> ScheduleRun:
    """The `schedule` field of a run of `entry` sent now: when it was due, the runs due since then that
    beat never sent (it was down), and when the entry is due next."""
    now = time.time() if now is None else now
    schedule = entry.schedule
    due = min(_next_after(schedule, _epoch(entry.last_run_at, now), now), now)
    missed = 0
    at = due
    while missed < _MISSED_LIMIT:
        following = _following(schedule, at, now)
        if following <= at or following > now:
            break
        missed += 1
        at = following
    next_at: float | None = None
    with contextlib.suppress(Exception):
        next_at = _next_after(schedule, now, now)
    return ScheduleRun(entry=str(entry.name), due=due, next_at=next_at, missed=missed)


def describe(schedule: Any) -> str:
    """A schedule in words: `every 2s`, `crontab(0 4 * * *)`, `solar(sunset, 51.5, -0.1)`, or its repr."""
    run_every = getattr(schedule, "run_every", None)
    if run_every is not None and hasattr(run_every, "total_seconds"):
        return f"every {float(run_every.total_seconds()):g}s"
    fields = ("_orig_minute", "_orig_hour", "_orig_day_of_month", "_orig_month_of_year", "_orig_day_of_week")
    if all(hasattr(schedule, f) for f in fields):
        return "crontab(" + " ".join(str(getattr(schedule, f)) for f in fields) + ")"
    if all(hasattr(schedule, f) for f in ("event", "lat", "lon")):
        return f"solar({schedule.event}, {schedule.lat}, {schedule.lon})"
    return repr(schedule)


def entries_of(scheduler: Any) -> list[ScheduleInfo]:
    """Every entry of a beat scheduler (at most MAX_SCHEDULES, by name)."""
    now = time.time()
    out: list[ScheduleInfo] = []
    for name, entry in sorted(dict(scheduler.schedule).items())[:MAX_SCHEDULES]:
        try:
            interval, next_at = schedule_of(entry, now)
            out.append(ScheduleInfo(name=str(name), task=str(entry.task), schedule=describe(entry.schedule),
                                    interval=interval, next_at=next_at))  # fmt: skip
        except Exception as exc:
            _log.warning("beat", "celery-flow: beat entry %r not described (ignored): %r", name, exc)
    return out
