"""Overview and trends: finished tasks and durations counted per time bucket, and the backlog per queue,
kept current by the write path and read back over any window without touching the tasks table.

- `finished_counts`: tasks finished per (width, bucket, name, final state), at their `finished_at`.
- `duration_counts`: tasks per (width, bucket, name, metric, queue, slot) with the sum of their
  durations, where metric is `runtime` (counted at `finished_at`) or `queue_wait` (sent to started,
  counted at `started_at`) and `slot` a log-spaced duration bucket (EDGES).
- `queue_backlog`: tasks PENDING (sent, not received yet) per queue.

Buckets are store/failures.py's (`buckets`, `window`): each count goes to a bucket of each width in
WIDTHS, and to width 0 (all time) that retention never lowers, so Prometheus reads counters from it. The
write path, the re-fold and retention move the tables by the difference between a task's old and new
contribution, as they move the per-name counts. A store migrated to schema 4 fills them from its re-fold:
rows numbered in (meta refold_cursor, meta stats_end] are not counted yet, and every write skips them.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from celery_flow.flow.model import (
    Backlog,
    Heatmap,
    NameTrend,
    Regression,
    SlowName,
    StatMetric,
)
from celery_flow.store.connection import Session
from celery_flow.store.failures import WIDTHS, Window, bucket_of, clamp, window

# Upper bounds (seconds) of the duration slots: 4 per decade from 1 ms to 10,000 s, to 3 digits. Slot k
# holds durations in (EDGES[k - 1], EDGES[k]]; slot 0 anything up to 1 ms, slot len(EDGES) anything
# longer than the last edge. The same edges are the heatmap's columns and the Prometheus `le` bounds.
EDGES: Final = tuple(float(f"{10 ** (k / 4):.3g}") for k in range(-12, 17))
SLOTS: Final = len(EDGES) + 1
# Final states counted as throughput (a NOT_RUN step never ran).
FINISHED_STATES: Final = ("SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST")
METRICS: Final = ("runtime", "queue_wait")
_MARKED_STATES: Final = frozenset({"PENDING", *FINISHED_STATES})
# Width 0: the all-time bucket.
ALL_WIDTHS: Final = (0, *WIDTHS)
# Every width is a multiple of the narrowest: a batch's counts are gathered in its buckets, then spread.
NARROWEST: Final = WIDTHS[0]
assert all(width % NARROWEST == 0 for width in WIDTHS)
DEFAULT_SPAN: Final = 24 * 3600.0
# The regression rule: p95 of the window's second half >= RATIO x the first half's, MIN_RUNS runs in each.
REGRESSION_RATIO: Final = 1.5
REGRESSION_MIN_RUNS: Final = 20
TOP: Final = 5

_FINISHED_UPSERT = (
    "INSERT INTO finished_counts (width, bucket, name, state, tasks) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (width, bucket, name, state) DO UPDATE SET tasks = finished_counts.tasks + excluded.tasks"
)
_DURATION_UPSERT = (
    "INSERT INTO duration_counts (width, bucket, name, metric, queue, slot, runs, total) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (width, bucket, name, metric, queue, slot) DO UPDATE SET "
    "runs = duration_counts.runs + excluded.runs, total = duration_counts.total + excluded.total"
)
_FINISHED_PRUNE = (
    "DELETE FROM finished_counts WHERE width = ? AND bucket = ? AND name = ? AND state = ? AND tasks <= 0"
)
_DURATION_PRUNE = (
    "DELETE FROM duration_counts WHERE width = ? AND bucket = ? AND name = ? AND metric = ? AND queue = ? "
    "AND slot = ? AND runs <= 0"
)
_BACKLOG_UPSERT = (
    "INSERT INTO queue_backlog (queue, waiting) VALUES (?, ?) "
    "ON CONFLICT (queue) DO UPDATE SET waiting = queue_backlog.waiting + excluded.waiting"
)


def slot(seconds: float) -> int:
    return bisect.bisect_left(EDGES, seconds)


class Counted(Protocol):
    """What a task row and a folded task share that the counts come from (read-only)."""

    @property
    def name(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def finished_at(self) -> float | None: ...
    @property
    def updated_at(self) -> float | None: ...
    @property
    def runtime(self) -> float | None: ...
    @property
    def queue_wait(self) -> float | None: ...


# One count a task adds: (kind, key, time, seconds), kind "f" (finished; key its state), "runtime" or
# "queue_wait" (key its queue), or "b" (backlog; key its queue).
Mark = tuple[str, str, float, float]


def marks(t: Counted) -> tuple[Mark, ...]:
    """What a task adds to the tables (a finished task: one finished mark and one of each duration)."""
    state, runtime, wait = t.state, t.runtime, t.queue_wait
    if runtime is None and wait is None and state not in _MARKED_STATES:
        return ()  # received, or started without a known send time: most changes of a batch
    out: list[Mark] = []
    if state == "PENDING":
        out.append(("b", t.queue or "", 0.0, 0.0))
    done = t.finished_at if t.finished_at is not None else (t.updated_at or 0.0)
    if state in FINISHED_STATES:
        out.append(("f", state, done, 0.0))
    if runtime is not None:
        out.append(("runtime", t.queue or "", done, max(0.0, runtime)))
    if wait is not None:
        at = t.started_at if t.started_at is not None else done
        out.append(("queue_wait", t.queue or "", at, max(0.0, wait)))
    return tuple(out)


@dataclass
class StatMoves:
    """Deltas to the stats tables, gathered over a batch of tasks in buckets of the narrowest width,
    then spread to every width and written at once. `all_time` False leaves width 0 alone (retention)."""

    all_time: bool = True
    # (name, kind, key, narrowest bucket, slot) -> [tasks, seconds]
    counts: dict[tuple[str, str, str, int, int], list[float]] = field(default_factory=dict)
    backlog: dict[str, int] = field(default_factory=dict)

    def move(self, name: str | None, task_marks: Iterable[Mark], sign: int) -> None:
        for kind, key, at, value in task_marks:
            if kind == "b":
                self.backlog[key] = self.backlog.get(key, 0) + sign
                continue
            k = (name or "", kind, key, bucket_of(at, NARROWEST), slot(value) if kind != "f" else 0)
            d = self.counts.get(k)
            if d is None:
                self.counts[k] = [sign, sign * value]
            else:
                d[0] += sign
                d[1] += sign * value

    def change(self, old: Counted | None, new: Counted) -> None:
        """Move by one task's change: its old row's marks out, the new fold's in."""
        added = marks(new)
        if old is None:
            self.move(new.name, added, +1)
            return
        removed = marks(old)
        if added != removed or old.name != new.name:
            self.move(old.name, removed, -1)
            self.move(new.name, added, +1)

    def write(self, session: Session) -> None:
        widths = ALL_WIDTHS if self.all_time else WIDTHS
        finished: dict[tuple[int, int, str, str], int] = {}
        durations: dict[tuple[int, int, str, str, str, int], list[float]] = {}
        for (name, kind, key, narrow, slot_), (n, total) in self.counts.items():
            if not n and not total:
                continue
            for width in widths:
                bucket = narrow // width * width if width else 0
                if kind == "f":
                    fk = (width, bucket, name, key)
                    finished[fk] = finished.get(fk, 0) + int(n)
                else:
                    d = durations.setdefault((width, bucket, name, kind, key, slot_), [0, 0.0])
                    d[0] += n
                    d[1] += total
        rows = [(*k, d) for k, d in sorted(finished.items()) if d]
        if rows:
            session.many(_FINISHED_UPSERT, rows)
        d_rows = [(*k, int(d[0]), d[1]) for k, d in sorted(durations.items()) if d[0] or d[1]]
        if d_rows:
            session.many(_DURATION_UPSERT, d_rows)
        backlog = [(q, d) for q, d in sorted(self.backlog.items()) if d]
        if backlog:
            session.many(_BACKLOG_UPSERT, backlog)
        # Rows a removal may have emptied: dropped, so a window's query reads only buckets with tasks.
        gone = [k for k, d in sorted(finished.items()) if d < 0]
        if gone:
            session.many(_FINISHED_PRUNE, gone)
        gone_d = [k for k, d in sorted(durations.items()) if d[0] < 0]
        if gone_d:
            session.many(_DURATION_PRUNE, gone_d)


def uncounted(session: Session) -> tuple[int, int] | None:
    """The task numbers (lo, hi] whose rows the tables do not count yet (a re-fold after the migration
    to schema 4 is filling them), or None."""
    meta: dict[str, int] = dict(
        session.rows("SELECT key, value FROM meta WHERE key IN ('stats_end', 'refold_cursor')")
    )
    if "stats_end" not in meta:
        return None
    return int(meta.get("refold_cursor", 0)), int(meta["stats_end"])


def is_counted(num: int, pending: tuple[int, int] | None) -> bool:
    return pending is None or not pending[0] < num <= pending[1]


# -- reads ----------------------------------------------------------------------------------------


def _window(since: float | None, until: float | None) -> tuple[float, float, Window]:
    end = clamp(until if until is not None else time.time())
    start = clamp(since if since is not None else end - DEFAULT_SPAN)
    start = min(start, end)
    return start, end, window(start, end)


def _edges(w: Window) -> list[float]:
    return [float(min(w.start + i * w.step, w.end)) for i in range(w.points + 1)]


def _point(w: Window, bucket: int) -> int:
    return min(w.points - 1, (int(bucket) - w.start) // w.step)


def _in(w: Window) -> tuple[str, list[Any]]:
    return "width = ? AND bucket >= ? AND bucket < ?", [w.width, w.start, w.end]


@dataclass
class Histogram:
    """Runs and summed durations per slot: quantiles estimated as the mean of the slot they fall in."""

    runs: list[int] = field(default_factory=lambda: [0] * SLOTS)
    total: list[float] = field(default_factory=lambda: [0.0] * SLOTS)

    def add(self, slot_: int, runs: int, total: float) -> None:
        self.runs[slot_] += runs
        self.total[slot_] += total

    @property
    def count(self) -> int:
        return sum(self.runs)

    def quantile(self, q: float) -> float | None:
        n = self.count
        if n <= 0:
            return None
        rank, seen = q * n, 0
        for k, runs in enumerate(self.runs):
            seen += runs
            if runs > 0 and seen >= rank:
                lo = EDGES[k - 1] if k > 0 else 0.0
                hi = EDGES[k] if k < len(EDGES) else self.total[k] / runs
                return min(max(self.total[k] / runs, lo), hi)
        return None


def heatmap(
    s: Session, name: str | None, metric: StatMetric, since: float | None, until: float | None
) -> Heatmap:
    _, _, w = _window(since, until)
    where, params = _in(w)
    where += " AND metric = ?"
    params.append(metric)
    if name is not None:
        where += " AND name = ?"
        params.append(name)
    counts = [[0] * len(EDGES) for _ in range(w.points)]
    for bucket, slot_, runs in s.rows(
        f"SELECT bucket, slot, SUM(runs) FROM duration_counts WHERE {where} GROUP BY bucket, slot", params
    ):
        counts[_point(w, bucket)][min(int(slot_), len(EDGES) - 1)] += int(runs)
    used = [j for j in range(len(EDGES)) if any(row[j] for row in counts)]
    lo, hi = (used[0], used[-1]) if used else (0, 0)
    value_edges = [0.0, *EDGES][lo : hi + 2]
    return Heatmap(
        name=name,
        metric=metric,
        time_edges=_edges(w),
        value_edges=value_edges,
        counts=[row[lo : hi + 1] for row in counts],
    )


def _halves(s: Session, w: Window, name: str | None) -> dict[str, tuple[Histogram, Histogram]]:
    """Runtime histograms per name over the window's first and second half (whole stored buckets)."""
    mid = w.start + (w.end - w.start) // w.width // 2 * w.width
    where, params = _in(w)
    if name is not None:
        where += " AND name = ?"
        params.append(name)
    out: dict[str, tuple[Histogram, Histogram]] = {}
    for task_name, half, slot_, runs, total in s.rows(
        "SELECT name, CASE WHEN bucket < ? THEN 0 ELSE 1 END, slot, SUM(runs), SUM(total) "
        f"FROM duration_counts WHERE {where} AND metric = 'runtime' "
        "GROUP BY 1, 2, 3",
        [mid, *params],
    ):
        pair = out.setdefault(task_name, (Histogram(), Histogram()))
        pair[int(half)].add(int(slot_), int(runs), float(total))
    return out


def regression(name: str, before: Histogram, after: Histogram) -> Regression | None:
    if before.count < REGRESSION_MIN_RUNS or after.count < REGRESSION_MIN_RUNS:
        return None
    p_before, p_after = before.quantile(0.95), after.quantile(0.95)
    if p_before is None or p_after is None or p_before <= 0 or p_after < REGRESSION_RATIO * p_before:
        return None
    return Regression(
        name=name,
        p95_before=p_before,
        p95_after=p_after,
        runs_before=before.count,
        runs_after=after.count,
        ratio=p_after / p_before,
    )


def name_trend(s: Session, name: str, since: float | None, until: float | None) -> NameTrend:
    _, _, w = _window(since, until)
    where, params = _in(w)
    runs, failures = [0] * w.points, [0] * w.points
    for bucket, state, tasks in s.rows(
        f"SELECT bucket, state, SUM(tasks) FROM finished_counts WHERE {where} AND name = ? "
        "GROUP BY bucket, state",
        [*params, name],
    ):
        i = _point(w, bucket)
        runs[i] += int(tasks)
        if state == "FAILURE":
            failures[i] += int(tasks)
    hists = [Histogram() for _ in range(w.points)]
    for bucket, slot_, n, total in s.rows(
        f"SELECT bucket, slot, SUM(runs), SUM(total) FROM duration_counts WHERE {where} AND name = ? "
        "AND metric = 'runtime' GROUP BY bucket, slot",
        [*params, name],
    ):
        hists[_point(w, bucket)].add(int(slot_), int(n), float(total))
    halves = _halves(s, w, name).get(name)
    return NameTrend(
        name=name,
        time_edges=_edges(w),
        runs=runs,
        failures=failures,
        p50=[h.quantile(0.5) for h in hists],
        p95=[h.quantile(0.95) for h in hists],
        regression=regression(name, *halves) if halves else None,
    )


class Totals(NamedTuple):
    """The overview's own figures (the rest come from failures, workers and the stuck rule)."""

    since: float
    until: float
    time_edges: list[float]
    throughput: dict[str, list[int]]
    backlog: list[Backlog]
    slowest: list[SlowName]
    regressions: list[Regression]


def totals(s: Session, since: float | None, until: float | None) -> Totals:
    start, end, w = _window(since, until)
    where, params = _in(w)
    throughput = {state: [0] * w.points for state in FINISHED_STATES}
    for bucket, state, tasks in s.rows(
        f"SELECT bucket, state, SUM(tasks) FROM finished_counts WHERE {where} GROUP BY bucket, state", params
    ):
        if state in throughput:
            throughput[state][_point(w, bucket)] += int(tasks)
    halves = _halves(s, w, None)
    slow = []
    for task_name, (before, after) in halves.items():
        whole = Histogram()
        for h in (before, after):
            for k in range(SLOTS):
                whole.add(k, h.runs[k], h.total[k])
        if whole.count > 0:
            slow.append(SlowName(task_name, whole.count, whole.quantile(0.5), whole.quantile(0.95)))
    slow.sort(key=lambda x: (-(x.p95 or 0.0), x.name))
    found = (regression(n, *pair) for n, pair in sorted(halves.items()))
    regressions = sorted((r for r in found if r is not None), key=lambda r: (-r.ratio, r.name))
    return Totals(
        since=start,
        until=end,
        time_edges=_edges(w),
        throughput=throughput,
        backlog=backlog(s),
        slowest=slow[:TOP],
        regressions=regressions,
    )


def backlog(s: Session) -> list[Backlog]:
    rows = s.rows("SELECT queue, waiting FROM queue_backlog WHERE waiting > 0 ORDER BY waiting DESC, queue")
    return [Backlog(queue=q, waiting=int(n)) for q, n in rows]


# -- all-time counts (Prometheus) -----------------------------------------------------------------


class AllTime(NamedTuple):
    """Counts since the store was created (width 0: retention never lowers them), and the backlog and
    workers online now: what /metrics exports."""

    # (name, state) -> tasks finished
    finished: dict[tuple[str, str], int]
    # (metric, name, queue) -> runs per slot and their summed durations
    durations: dict[tuple[str, str, str], Histogram]
    backlog: list[Backlog] = []
    workers_online: int = 0


def all_time(s: Session) -> AllTime:
    finished = {
        (name, state): int(n)
        for name, state, n in s.rows("SELECT name, state, tasks FROM finished_counts WHERE width = 0")
    }
    durations: dict[tuple[str, str, str], Histogram] = {}
    for metric, name, queue, slot_, runs, total in s.rows(
        "SELECT metric, name, queue, slot, runs, total FROM duration_counts WHERE width = 0"
    ):
        durations.setdefault((metric, name, queue), Histogram()).add(int(slot_), int(runs), float(total))
    return AllTime(finished, durations, backlog(s))


def fill(session: Session, tasks: Sequence[Counted]) -> None:
    """Count tasks not counted yet (the re-fold after the migration to schema 4)."""
    moves = StatMoves()
    for task in tasks:
        moves.move(task.name, marks(task), +1)
    moves.write(session)
