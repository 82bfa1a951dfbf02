"""One row per root workflow: its state, counts by state, start and duration; and the same for a trace.

The store keeps these rows up to date as tasks change (so listing flows never aggregates a million
tasks at query time); it, the flow graph and the trace view derive the state with the one rule here,
and the UI shows what they say.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from celery_flow.flow.model import TERMINAL_STATES, FlowState, FlowSummary, TaskSummary, TraceSummary


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
    member_name: tuple[float, str | None] | None = None
    trace_id: str | None = None
    for task in tasks:
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
        else:
            if task.group_id == root_id and task.parent_id is None:
                # A group or chord applied outside a task is rooted at its group id (no task has that
                # id): the flow is named after its first top-level member, as the store names it.
                at = seen if seen is not None else float("inf")
                if member_name is None or at < member_name[0]:
                    member_name = (at, task.name)
            if trace_id is None:
                trace_id = task.trace_id
    if root_name is None and member_name is not None:
        root_name = member_name[1]
    state, finished_at, duration = _outcome(counts, started, finished)
    return FlowSummary(
        root_id=root_id,
        root_name=root_name,
        state=state,
        counts=counts,
        task_count=sum(counts.values()),
        started_at=started,
        finished_at=finished_at,
        duration=duration,
        trace_id=trace_id,
        updated_at=updated,
    )


def summarize_trace(flows: Iterable[FlowSummary]) -> TraceSummary:
    """The flows of one trace as one: their counts added up, judged by `flow_state`."""
    counts: dict[str, int] = {}
    started: float | None = None
    finished: float | None = None
    for flow in flows:
        for state, count in flow.counts.items():
            counts[state] = counts.get(state, 0) + count
        if flow.started_at is not None and (started is None or flow.started_at < started):
            started = flow.started_at
        if flow.finished_at is not None and (finished is None or flow.finished_at > finished):
            finished = flow.finished_at
    state, finished_at, duration = _outcome(counts, started, finished)
    return TraceSummary(
        state=state,
        counts=counts,
        task_count=sum(counts.values()),
        started_at=started,
        finished_at=finished_at,
        duration=duration,
    )


def _outcome(
    counts: Mapping[str, int], started: float | None, last_finished: float | None
) -> tuple[FlowState, float | None, float | None]:
    """State, finish time and duration: a flow whose branches still run has not finished, even failed."""
    done = any(counts.values()) and all(state in TERMINAL_STATES for state, n in counts.items() if n > 0)
    finished_at = last_finished if done else None
    duration = finished_at - started if finished_at is not None and started is not None else None
    return flow_state(counts), finished_at, max(duration, 0.0) if duration is not None else None
