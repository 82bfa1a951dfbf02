"""Retention: deleting the oldest tasks (by first-seen time) beyond an age or a count, in short slices.

A deleted task takes its events and its search entry with it; its name's counts, its failure
clusters' counts and the overview's windowed counts (store/stats.py) go down and each flow that lost
tasks is recounted from the tasks left (deleted once none are).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from celery_flow.store import schedules, search, stats
from celery_flow.store.connection import Session, chunks, in_list, meta_value, select_in
from celery_flow.store.failures import ClusterMoves, row_causes
from celery_flow.store.rows import FlowRecord, fetch_in, select
from celery_flow.store.schema import STATES
from celery_flow.store.stats import StatMoves
from celery_flow.store.write import STATE_INDEX, add_name_stats, read_flows, save_flows

# Tasks deleted per transaction.
SWEEP_BATCH = 5000
# Seconds of deleting per sweep() call at most (see sweep()).
SWEEP_BUDGET = 2.0


class _Doomed(NamedTuple):
    """What deleting a task changes elsewhere: its name's counts, its flow, its events, its clusters."""

    task_id: str
    name: str | None
    state: str
    root_id: str
    num: int
    fingerprint: str | None
    finished_at: float | None
    updated_at: float | None
    extra: str
    queue: str | None
    started_at: float | None
    runtime: float | None
    queue_wait: float | None


_DOOMED_SELECT = select(_Doomed._fields, "tasks") + " WHERE task_id IN {}"


def sweep(
    writing: Callable[[Callable[[Session, int], int]], int],
    ttl: float | None,
    max_tasks: int | None,
    budget: float,
) -> int:
    """Delete the oldest tasks beyond `ttl` seconds / `max_tasks`; return how many.

    Works in batches of SWEEP_BATCH tasks, each its own short transaction (`writing`), and returns after
    about `budget` seconds even if more is due, so ingest in the same process (the consumer calls this
    between batches) never stalls behind a large backlog; the next call goes on where this stopped.
    """
    deleted = 0
    cutoff = time.time() - ttl if ttl is not None and ttl > 0 else None
    if cutoff is None and max_tasks is None:
        return 0
    stop = time.monotonic() + budget
    while True:
        count = writing(lambda s, seq: _sweep_batch(s, seq, cutoff, max_tasks))
        deleted += count
        if count < SWEEP_BATCH or time.monotonic() >= stop:
            return deleted


def _sweep_batch(session: Session, seq: int, cutoff: float | None, max_tasks: int | None) -> int:
    ids: list[str] = []
    if cutoff is not None:
        ids = [
            r[0]
            for r in session.rows(
                "SELECT task_id FROM tasks WHERE ts < ? ORDER BY ts, task_id LIMIT ?", (cutoff, SWEEP_BATCH)
            )
        ]
    if not ids and max_tasks is not None:
        excess = meta_value(session, "tasks") - max_tasks
        if excess > 0:
            ids = [
                r[0]
                for r in session.rows(
                    "SELECT task_id FROM tasks ORDER BY ts, task_id LIMIT ?", (min(excess, SWEEP_BATCH),)
                )
            ]
    if ids:
        _delete_tasks(session, seq, ids)
    return len(ids)


def _delete_tasks(session: Session, seq: int, ids: list[str]) -> None:
    doomed = fetch_in(session, _Doomed, _DOOMED_SELECT, ids)
    nums = sorted(task.num for task in doomed)
    events = 0
    for chunk in chunks(nums):
        events += session.run(f"DELETE FROM events WHERE num IN {in_list(chunk)}", chunk)
        session.run(f"DELETE FROM tasks WHERE num IN {in_list(chunk)}", chunk)
        search.forget(session, chunk)
    schedules.forget_runs(session, ids)
    deltas: dict[str, list[int]] = {}
    for task in doomed:
        if task.name:
            deltas.setdefault(task.name, [0] * len(STATES))[STATE_INDEX[task.state]] -= 1
    add_name_stats(session, deltas)
    clusters = ClusterMoves()
    for task in doomed:
        causes = row_causes(task.state, task.fingerprint, task.finished_at, task.updated_at, task.extra)
        clusters.move(task.name, causes, -1)
    clusters.write(session)
    # The windowed stats lose the task; the all-time counts (width 0) keep it.
    moves, pending = StatMoves(all_time=False), stats.uncounted(session)
    for task in doomed:
        if stats.is_counted(task.num, pending):
            moves.move(task.name, stats.marks(task), -1)
    moves.write(session)
    # The flows that lost tasks: recount them from what is left (an indexed range per flow).
    old_rows = read_flows(session, sorted({task.root_id for task in doomed}))
    flows = {root: FlowRecord.from_row(row) for root, row in old_rows.items()}
    for flow in flows.values():
        flow.counts, flow.task_count = {}, 0
        flow.started_at = flow.last_finished = None
    by_fnum = {flow.fnum: flow for flow in flows.values()}
    for fnum, state, count, started, finished in select_in(
        session,
        "SELECT fnum, state, COUNT(*), MIN(ts), MAX(finished_at) FROM tasks WHERE fnum IN {} "
        "GROUP BY fnum, state",
        sorted(by_fnum),
    ):
        by_fnum[fnum].add_many(state, int(count), started, finished)
    save_flows(session, flows.values(), seq, old_rows)
    session.many(
        "UPDATE meta SET value = value - ? WHERE key = ?", [(len(doomed), "tasks"), (events, "events")]
    )
