"""Stuck: a task running far longer than its name's own history says it should, or than `--stuck-after`.

A STARTED task is stuck once it has been running (now - started_at) longer than STUCK_FACTOR times the
p99 of its name's recent runtimes (queries.py `_recent_runtimes`, when there are at least MIN_RUNS of
them; never under MIN_LIMIT), or longer than `stuck_after` seconds when that is set: whichever comes
first. Never stored, since it changes with the clock alone: lists, graph nodes and details are flagged
when read, and the `stuck` filter is a condition on the partial index of running tasks. Each name's
limit is cached for CACHE_SECONDS, so a request reads runtimes only for the names it has not seen lately.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from celery_flow.flow.model import TaskSummary
from celery_flow.store.connection import Session
from celery_flow.store.lost import RUNNING_SQL
from celery_flow.store.queries import _percentile, _recent_runtimes

STUCK_FACTOR = 5.0
MIN_RUNS = 20
# A task is never stuck by its history before this many seconds: 5 x the p99 of a task that takes
# milliseconds would flag every run of it for an instant.
MIN_LIMIT = 1.0
CACHE_SECONDS = 30.0
# Names with stuck tasks the `stuck` filter spells out, one `OR` term each.
MAX_NAMES = 200


class StuckRule:
    """The stuck rule of one store: `stuck_after` (None: history only) and the cached limits per name."""

    def __init__(self, stuck_after: float | None = None) -> None:
        self.stuck_after = stuck_after
        self._limits: dict[str, tuple[float, float | None]] = {}  # name -> (good until, 5 x p99)
        self._lock = threading.Lock()

    def limits(self, s: Session, names: Iterable[str]) -> dict[str, float]:
        """Seconds of running after which a task of each name is stuck (names with no limit left out)."""
        wanted = sorted(set(names))
        now = time.monotonic()
        with self._lock:
            cached = {name: self._limits.get(name) for name in wanted}
        missing = [name for name, hit in cached.items() if hit is None or hit[0] < now]
        if missing:
            runtimes = _recent_runtimes(s, missing)
            fresh = {name: (now + CACHE_SECONDS, _history_limit(runtimes.get(name, []))) for name in missing}
            with self._lock:
                self._limits.update(fresh)
            cached.update(fresh)
        out: dict[str, float] = {}
        for name, hit in cached.items():
            limit = min(
                (x for x in (hit[1] if hit else None, self.stuck_after) if x is not None), default=None
            )
            if limit is not None:
                out[name] = limit
        return out

    def flag(self, s: Session, tasks: Sequence[TaskSummary]) -> None:
        """Set `stuck` on the running tasks of `tasks` that are."""
        running = [t for t in tasks if t.state == "STARTED" and t.started_at is not None]
        if not running:
            return
        limits = self.limits(s, (t.name for t in running if t.name))
        now = time.time()
        for task in running:
            limit = limits.get(task.name, self.stuck_after) if task.name else self.stuck_after
            task.stuck = limit is not None and now - (task.started_at or now) > limit

    def condition(self, s: Session) -> tuple[str, list[Any]]:
        """A WHERE condition on `tasks` true exactly for the tasks stuck now."""
        oldest = {
            name: started
            for name, started in s.rows(
                f"SELECT name, MIN(started_at) FROM tasks WHERE {RUNNING_SQL} AND state = 'STARTED' "
                "GROUP BY name"
            )
            if name is not None and started is not None
        }
        now = time.time()
        terms: list[str] = []
        params: list[Any] = []
        if self.stuck_after is not None:
            terms.append("started_at < ?")
            params.append(now - self.stuck_after)
        # The names whose own limit is the shorter one and that have a stuck task now.
        own = sorted(
            (limit, name)
            for name, limit in self.limits(s, oldest).items()
            if (self.stuck_after is None or limit < self.stuck_after) and oldest[name] < now - limit
        )
        for limit, name in own[:MAX_NAMES]:
            terms.append("(name = ? AND started_at < ?)")
            params.extend([name, now - limit])
        if not terms:
            return "1 = 0", []
        # The partial index's own condition first, so both engines walk only the running tasks.
        return f"{RUNNING_SQL} AND state = 'STARTED' AND ({' OR '.join(terms)})", params


def _history_limit(sorted_runtimes: Sequence[float]) -> float | None:
    """STUCK_FACTOR x the p99 of a name's recent runtimes, once there are MIN_RUNS of them."""
    if len(sorted_runtimes) < MIN_RUNS:
        return None
    p99 = _percentile(sorted_runtimes, 0.99)
    return max(MIN_LIMIT, STUCK_FACTOR * p99) if p99 is not None else None
