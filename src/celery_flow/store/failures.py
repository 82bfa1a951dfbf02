"""Failure clusters: failures and retries counted by cause (flow/fingerprint.py), kept current by the
write path and read back over any time window without touching the tasks table.

- `failure_clusters`: one row per fingerprint: exception type, title, first and last time seen, and the
  failures and retries stored now.
- `failure_counts`: failures and retries per (width, bucket, fingerprint, task name), where `bucket` is
  the start (epoch seconds) of a bucket `width` seconds wide; each failure or retry counts once in a
  bucket of each width in WIDTHS.

A task's contribution is its failure (state FAILURE: its fingerprint, at its `finished_at`) and its
retries (each `retried` event's fingerprint and time, kept in the row's extra JSON as `rfp`). The write
path and retention move the tables by the difference between a task's old and new contribution, as
they move the per-name counts; a window's query sums the buckets of one width.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from celery_flow.flow.fingerprint import label
from celery_flow.flow.model import FailureCluster, Sparkline, TaskDetail
from celery_flow.store.connection import Row, Session, select_in
from celery_flow.store.rows import json_decoder

if TYPE_CHECKING:
    from celery_flow.store.rows import TaskRow

# Bucket widths in seconds: a window is counted in the widest one that still gives MIN_POINTS buckets.
WIDTHS: Final = (60, 600, 3600)
MIN_POINTS: Final = 24
# Sparkline buckets at most: a bucket of the sparkline spans several stored buckets when needed.
MAX_POINTS: Final = 60
SAMPLES: Final = 10
DEFAULT_CLUSTERS: Final = 100
# Times are clamped to [0, LATEST] (about the year 33,000): any float an event or the API carries makes
# an integer bucket both engines can store.
LATEST: Final = 1e12

_COUNTS_UPSERT = (
    "INSERT INTO failure_counts (width, bucket, fingerprint, name, failures, retries) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (width, bucket, fingerprint, name) DO UPDATE SET "
    "failures = failure_counts.failures + excluded.failures, "
    "retries = failure_counts.retries + excluded.retries"
)
_COUNTS_PRUNE = (
    "DELETE FROM failure_counts WHERE width = ? AND bucket = ? AND fingerprint = ? AND name = ? "
    "AND failures <= 0 AND retries <= 0"
)
_CLUSTER_COLUMNS = (
    "fingerprint",
    "exception_type",
    "message",
    "first_seen",
    "last_seen",
    "failures",
    "retries",
)
_CLUSTERS_UPSERT = (
    f"INSERT INTO failure_clusters ({', '.join(_CLUSTER_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (fingerprint) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _CLUSTER_COLUMNS[1:])
)


def clamp(ts: float) -> float:
    """A time in [0, LATEST]."""
    return min(max(ts, 0.0), LATEST)


def bucket_of(ts: float, width: int) -> int:
    """The start of the bucket `width` seconds wide holding time `ts`; width 0 is the single bucket 0
    of all time."""
    return int(min(max(ts, 0.0), LATEST) // width) * width if width else 0


def buckets(ts: float, widths: Sequence[int] = WIDTHS) -> list[tuple[int, int]]:
    """The (width, bucket start) of each width a count at time `ts` goes to."""
    return [(width, bucket_of(ts, width)) for width in widths]


class Cause(NamedTuple):
    """One failure (`retry` False) or one retry of a task, with the fingerprint of its cause."""

    fingerprint: str
    ts: float
    retry: bool


def task_causes(task: TaskDetail) -> list[Cause]:
    """What a folded task adds to the clusters: each retry, and its failure if it ended FAILURE."""
    if task.fingerprint is None:  # never failed nor retried (flow/fold.py `fingerprint`): most tasks
        return []
    out = [Cause(e.fingerprint, e.ts, True) for e in task.events if e.type == "retried" and e.fingerprint]
    if task.state == "FAILURE" and task.fingerprint:
        out.append(Cause(task.fingerprint, _failed_at(task.finished_at, task.updated_at), False))
    return out


def row_causes(
    state: str, fingerprint: str | None, finished_at: float | None, updated_at: float | None, extra: str
) -> list[Cause]:
    """What a stored task row adds to the clusters (the same as `task_causes` of the task it was
    written from)."""
    out: list[Cause] = []
    if fingerprint is None:
        return out
    if '"rfp"' in extra:  # most failed rows never retried: skip decoding their extra
        out = [Cause(fp, ts, True) for fp, ts in json_decoder.decode(extra).get("rfp", ())]
    if state == "FAILURE" and fingerprint:
        out.append(Cause(fingerprint, _failed_at(finished_at, updated_at), False))
    return out


def stored_causes(row: TaskRow) -> list[Cause]:
    return row_causes(row.state, row.fingerprint, row.finished_at, row.updated_at, row.extra)


def _failed_at(finished_at: float | None, updated_at: float | None) -> float:
    return finished_at if finished_at is not None else (updated_at or 0.0)


@dataclass
class ClusterMoves:
    """Deltas to the cluster tables, gathered over a batch of tasks, then written at once."""

    counts: dict[tuple[int, int, str, str], list[int]] = field(default_factory=dict)
    # fingerprint -> [failures, retries, first seen, last seen] (times of added causes only)
    clusters: dict[str, list[Any]] = field(default_factory=dict)
    # fingerprint -> (exception, traceback) of an added cause, to title a new cluster
    sources: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def move(self, name: str | None, causes: Iterable[Cause], sign: int) -> None:
        for fp, when, retry in causes:
            ts = clamp(when)
            column = 1 if retry else 0
            for width, bucket in buckets(ts):
                self.counts.setdefault((width, bucket, fp, name or ""), [0, 0])[column] += sign
            cluster = self.clusters.setdefault(fp, [0, 0, math.inf, -math.inf])
            cluster[column] += sign
            if sign > 0:
                cluster[2], cluster[3] = min(cluster[2], ts), max(cluster[3], ts)

    def change(self, old: TaskRow | None, new: TaskDetail) -> None:
        """Move by one task's change: its old row's causes out, the new fold's in."""
        added = task_causes(new)
        removed = stored_causes(old) if old is not None else []
        if added == removed and (old is None or old.name == new.name):
            return
        self.move(old.name if old is not None else None, removed, -1)
        self.move(new.name, added, +1)
        for cause in added:
            if cause.fingerprint not in self.sources:
                self.sources[cause.fingerprint] = _source(new, cause)

    def write(self, session: Session) -> None:
        counts = [(*key, *delta) for key, delta in sorted(self.counts.items()) if any(delta)]
        if not counts:
            return
        session.many(_COUNTS_UPSERT, counts)
        if any(delta[0] < 0 or delta[1] < 0 for delta in self.counts.values()):
            session.many(_COUNTS_PRUNE, [row[:4] for row in counts])
        _write_clusters(session, self.clusters, self.sources)


def _source(task: TaskDetail, cause: Cause) -> tuple[str | None, str | None]:
    """The exception text and traceback of the event a cause came from."""
    if not cause.retry:
        return task.exception, task.traceback
    for e in task.events:
        if e.type == "retried" and e.fingerprint == cause.fingerprint:
            return e.exception or e.reason, e.traceback
    return None, None


def _clusters(session: Session, fps: Sequence[str]) -> dict[str, Row]:
    """The failure_clusters rows of these fingerprints (columns in _CLUSTER_COLUMNS order)."""
    sql = f"SELECT {', '.join(_CLUSTER_COLUMNS)} FROM failure_clusters WHERE fingerprint IN {{}}"
    return {r[0]: r for r in select_in(session, sql, fps)}


def _write_clusters(
    session: Session, moves: dict[str, list[Any]], sources: dict[str, tuple[str | None, str | None]]
) -> None:
    fps = sorted(fp for fp, m in moves.items() if m[0] or m[1])
    current = _clusters(session, fps)
    rows, gone = [], []
    for fp in fps:
        failures, retries, first, last = moves[fp]
        old = current.get(fp)
        if old is not None:
            exception_type, message = old[1], old[2]
            first, last = min(first, old[3]), max(last, old[4])
            failures, retries = failures + int(old[5]), retries + int(old[6])
        elif fp in sources:
            exception_type, message = label(*sources[fp])
        else:
            continue  # only removals of a cluster not stored: nothing to take away
        if failures <= 0 and retries <= 0:
            if old is not None:
                gone.append((fp,))
            continue
        rows.append((fp, exception_type, message, first, last, max(0, failures), max(0, retries)))
    if rows:
        session.many(_CLUSTERS_UPSERT, rows)
    if gone:
        session.many("DELETE FROM failure_clusters WHERE fingerprint = ?", gone)


# -- reads ----------------------------------------------------------------------------------------


class Window(NamedTuple):
    """A window counted in whole stored buckets of `width` seconds, [start, end), shown in sparkline
    buckets of `step` seconds."""

    width: int
    start: int
    end: int
    step: int
    points: int


def window(since: float, until: float) -> Window:
    """The buckets a window covers: the widest width giving MIN_POINTS buckets, `since` rounded down and
    `until` up to whole buckets, each sparkline bucket a whole number of them, at most MAX_POINTS."""
    span = max(until - since, 1.0)
    width = max([w for w in WIDTHS if span / w >= MIN_POINTS], default=WIDTHS[0])
    start = int(since // width) * width
    end = max(start + width, math.ceil(until / width) * width)
    step = width * math.ceil((end - start) // width / MAX_POINTS)
    return Window(width, start, end, step, math.ceil((end - start) / step))


def failures(
    s: Session,
    since: float | None,
    until: float | None,
    name: str | None,
    limit: int = DEFAULT_CLUSTERS,
) -> list[FailureCluster]:
    """The clusters with failures or retries in [since, until) (all stored, by default), most failures
    first, each with its counts over the window."""
    until = clamp(until if until is not None else time.time())
    if since is not None:
        since = clamp(since)
    else:
        oldest = s.rows("SELECT MIN(first_seen) FROM failure_clusters")[0][0]
        if oldest is None:
            return []
        since = min(float(oldest), until)
    w = window(since, until)
    where = "width = ? AND bucket >= ? AND bucket < ?"
    params: list[Any] = [w.width, w.start, w.end]
    if name is not None:
        where += " AND name = ?"
        params.append(name)
    totals: dict[str, list[int]] = {}
    names: dict[str, list[tuple[int, str]]] = {}
    for fp, task_name, failed, retried in s.rows(
        f"SELECT fingerprint, name, SUM(failures), SUM(retries) FROM failure_counts WHERE {where} "
        "GROUP BY fingerprint, name",
        params,
    ):
        total = totals.setdefault(fp, [0, 0])
        total[0] += int(failed)
        total[1] += int(retried)
        names.setdefault(fp, []).append((-(int(failed) + int(retried)), task_name))
    meta = _clusters(s, sorted(totals))
    ranked = sorted(
        (fp for fp in totals if fp in meta and (totals[fp][0] > 0 or totals[fp][1] > 0)),
        key=lambda fp: (-totals[fp][0], -totals[fp][1], -meta[fp][4], fp),
    )[:limit]
    lines = _sparklines(s, w, where, params, ranked)
    return [
        FailureCluster(
            fingerprint=fp,
            exception_type=meta[fp][1],
            message=meta[fp][2],
            count=totals[fp][0],
            retries=totals[fp][1],
            first_seen=meta[fp][3],
            last_seen=meta[fp][4],
            task_names=[n for _, n in sorted(names[fp]) if n],
            sample_task_ids=samples(s, fp, w.start, w.end, name),
            sparkline=Sparkline(start=float(w.start), step=float(w.step), counts=lines[fp]),
        )
        for fp in ranked
    ]


def _sparklines(
    s: Session, w: Window, where: str, params: list[Any], fps: Sequence[str]
) -> dict[str, list[int]]:
    lines = {fp: [0] * w.points for fp in fps}
    if not fps:
        return lines
    for fp, bucket, failed in select_in(
        s,
        "SELECT fingerprint, bucket, SUM(failures) FROM failure_counts WHERE fingerprint IN {} AND "
        + where
        + " AND failures > 0 GROUP BY fingerprint, bucket",
        list(fps),
        params,
    ):
        index = min(w.points - 1, int((int(bucket) - w.start) // w.step))
        lines[fp][index] += int(failed)
    return lines


def samples(
    s: Session, fingerprint: str, since: float | None, until: float | None, name: str | None
) -> list[str]:
    """Up to SAMPLES tasks of a cluster (their latest failure or retry had this cause), newest first."""
    sql = "SELECT task_id FROM tasks WHERE fingerprint = ?"
    params: list[Any] = [fingerprint]
    for condition, value in (("ts >= ?", since), ("ts < ?", until), ("name = ?", name)):
        if value is not None:
            sql += f" AND {condition}"
            params.append(value)
    sql += " ORDER BY ts DESC, task_id DESC LIMIT ?"
    return [r[0] for r in s.rows(sql, [*params, SAMPLES])]


def cluster_size(s: Session, fingerprint: str) -> int:
    """Failed tasks stored now whose failure had this cause."""
    rows = s.rows("SELECT failures FROM failure_clusters WHERE fingerprint = ?", (fingerprint,))
    return int(rows[0][0]) if rows else 0
