"""One row per root workflow: its state, counts by state, start and duration.

The store keeps these rows up to date as tasks change (so listing flows never aggregates a million
tasks at query time); both it and any in-memory caller derive the state with the same rule here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from celery_flow.flow.model import TERMINAL_STATES, FlowState, FlowSummary, TaskSummary


def flow_state(counts: Mapping[str, int]) -> FlowState:
    """The state of a whole flow from its tasks' state counts.

    A failure anywhere is what a user needs to see first, even while other branches still run; then a
    flow is running while any task is not terminal (pending if nothing has been picked up yet); a
    finished flow is revoked or rejected if any task was, else successful.
    """
    present = {state for state, count in counts.items() if count > 0}
    if "FAILURE" in present:
        return "FAILURE"
    unfinished = present - TERMINAL_STATES
    if unfinished:
        return "PENDING" if unfinished == {"PENDING"} and not (present & TERMINAL_STATES) else "RUNNING"
    if "REVOKED" in present:
        return "REVOKED"
    if "REJECTED" in present:
        return "REJECTED"
    return "SUCCESS" if present else "PENDING"


def first_seen(task: TaskSummary) -> float | None:
    """When a task was first known: sent, else received, started, finished, or last update."""
    for value in (task.sent_at, task.received_at, task.started_at, task.finished_at, task.updated_at):
        if value is not None:
            return value
    return None


def summarize_flow(root_id: str, tasks: Iterable[TaskSummary]) -> FlowSummary:
    """The summary row of one root workflow from its tasks."""
    counts: dict[str, int] = {}
    started: float | None = None
    finished: float | None = None
    updated: float | None = None
    root_name: str | None = None
    trace_id: str | None = None
    total = 0
    for task in tasks:
        total += 1
        counts[task.state] = counts.get(task.state, 0) + 1
        seen = first_seen(task)
        if seen is not None and (started is None or seen < started):
            started = seen
        if task.finished_at is not None and (finished is None or task.finished_at > finished):
            finished = task.finished_at
        if task.updated_at is not None and (updated is None or task.updated_at > updated):
            updated = task.updated_at
        if task.task_id == root_id:
            root_name = task.name
            trace_id = task.trace_id or trace_id
        elif trace_id is None:
            trace_id = task.trace_id
    flow = flow_state(counts)
    # A failed flow whose other branches still run has not finished yet.
    done = total > 0 and all(state in TERMINAL_STATES for state in counts)
    finished_at = finished if done else None
    duration = finished_at - started if finished_at is not None and started is not None else None
    return FlowSummary(
        root_id=root_id,
        root_name=root_name,
        state=flow,
        counts=counts,
        task_count=total,
        started_at=started,
        finished_at=finished_at,
        duration=max(duration, 0.0) if duration is not None else None,
        trace_id=trace_id,
        updated_at=updated,
    )
