"""One row per root workflow: its state, counts by state, start and duration.

The store keeps these rows up to date as tasks change (so listing flows never aggregates a million
tasks at query time) with `FlowTally`, the same tally `summarize_flow` builds from a list of tasks; the
flow graph and the trace view use the same functions, and the UI shows what they say. The state, naming,
"done" and duration rules live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from celery_flow.flow.model import TERMINAL_STATES, FlowState, FlowSummary, TaskSummary, TraceSummary


def flow_state(counts: Mapping[str, int]) -> FlowState:
    """The state of a whole flow from its tasks' state counts.

    A failure anywhere is what a user needs to see first, even while other branches still run; then a
    flow is running while any task is not terminal, planned steps included (pending if nothing has been
    picked up yet); a finished flow is lost, revoked or rejected if any task was, else successful (steps
    that never ran follow from one of those, or were error callbacks nothing needed).
    """
    present = {state for state, count in counts.items() if count > 0}
    if "FAILURE" in present:
        return "FAILURE"
    unfinished = present - TERMINAL_STATES
    if unfinished:
        waiting = unfinished <= {"PENDING", "PLANNED"} and not (present & TERMINAL_STATES)
        return "PENDING" if waiting else "RUNNING"
    if "LOST" in present:
        return "LOST"
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


@dataclass
class FlowTally:
    """One flow's figures, built a task at a time: counts by state and the time bounds of its tasks.

    `started_at` is the earliest first-seen time, `last_finished` the latest finish and `updated_at` the
    latest update of the tasks added; `remove` takes a task's count back out (it changed or was deleted)
    but leaves the bounds, which a changed task only ever widens.
    """

    root_id: str
    root_name: str | None = None
    trace_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    task_count: int = 0
    started_at: float | None = None
    last_finished: float | None = None
    updated_at: float | None = None

    def add(self, task: TaskSummary) -> None:
        """Count `task` in, widen the bounds, and take the flow's name and trace id from it if due."""
        self.add_many(task.state, 1, first_seen(task), task.finished_at)
        if task.updated_at is not None and (self.updated_at is None or task.updated_at > self.updated_at):
            self.updated_at = task.updated_at
        if task.task_id == self.root_id:
            self.root_name = task.name or self.root_name
            self.trace_id = task.trace_id or self.trace_id
            return
        if self.root_name is None and task.group_id == self.root_id and task.parent_id is None:
            # A group or chord applied outside a task is rooted at its group id (no task has that id):
            # name the flow after its top-level members (not the chord callback, whose parent is a
            # member) so a list never shows a blank row.
            self.root_name = task.name
        if self.trace_id is None:
            self.trace_id = task.trace_id

    def add_many(self, state: str, count: int, started: float | None, finished: float | None) -> None:
        """Count in `count` tasks in `state`, first seen at `started` and finished by `finished` at most."""
        self.counts[state] = self.counts.get(state, 0) + count
        self.task_count += count
        if started is not None and (self.started_at is None or started < self.started_at):
            self.started_at = started
        if finished is not None and (self.last_finished is None or finished > self.last_finished):
            self.last_finished = finished

    def remove(self, state: str) -> None:
        """Count out one task that was in `state`."""
        self.counts[state] = self.counts.get(state, 0) - 1
        self.task_count -= 1

    @property
    def state(self) -> FlowState:
        return flow_state(self.counts)

    def summary(self) -> FlowSummary:
        return summary_from_counts(
            self.root_id, self.counts, self.task_count, self.started_at, self.last_finished,
            root_name=self.root_name, trace_id=self.trace_id, updated_at=self.updated_at,
        )  # fmt: skip


def summary_from_counts(
    root_id: str,
    counts: Mapping[str, int],
    task_count: int,
    started_at: float | None,
    last_finished: float | None,
    *,
    root_name: str | None = None,
    trace_id: str | None = None,
    updated_at: float | None = None,
    state: FlowState | None = None,
) -> FlowSummary:
    """A flow's summary from its counts by state and the time bounds of its tasks.

    `state` is `flow_state(counts)` unless given (a stored flow carries the one computed from the same
    counts when it was written). The flow has finished, with a duration, only once every task has.
    """
    counts = {state: count for state, count in counts.items() if count}
    finished_at, duration = _finish(counts, started_at, last_finished)
    return FlowSummary(
        root_id=root_id,
        root_name=root_name,
        state=state if state is not None else flow_state(counts),
        counts=counts,
        task_count=task_count,
        started_at=started_at,
        finished_at=finished_at,
        duration=duration,
        trace_id=trace_id,
        updated_at=updated_at,
    )


def summarize_flow(root_id: str, tasks: Iterable[TaskSummary]) -> FlowSummary:
    """The summary row of one root workflow from its tasks."""
    tally = FlowTally(root_id)
    for task in tasks:
        tally.add(task)
    return tally.summary()


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
    counts = {state: count for state, count in counts.items() if count}
    finished_at, duration = _finish(counts, started, finished)
    return TraceSummary(
        state=flow_state(counts),
        counts=counts,
        task_count=sum(counts.values()),
        started_at=started,
        finished_at=finished_at,
        duration=duration,
    )


def _finish(
    counts: Mapping[str, int], started: float | None, last_finished: float | None
) -> tuple[float | None, float | None]:
    """Finish time and duration: a flow whose branches still run has not finished, even if it failed."""
    done = bool(counts) and all(state in TERMINAL_STATES for state in counts)
    finished_at = last_finished if done else None
    duration = finished_at - started if finished_at is not None and started is not None else None
    return finished_at, max(duration, 0.0) if duration is not None else None
