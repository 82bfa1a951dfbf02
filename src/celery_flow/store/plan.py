"""Planned steps: the rest of a workflow, stored from the `plan` of a `sent` event before it is sent.

A planned step is a task row in state PLANNED with no events: its name and lineage from the plan, in
the flow of the task whose message held it, and in its `extra` JSON the steps it runs `after`, each
with the condition (`success`, `failure`, `chord`). When its own first event arrives, the ordinary fold
takes over the same row (same number, same flow); a plan never overwrites a task that has events.

A planned step that can no longer run becomes NOT_RUN, with the reason: a `success` or `chord`
predecessor failed, was revoked, rejected or lost, or never ran itself (then the reason names the
step that started it all); an errback whose predecessors all succeeded is "not needed". The verdict is
a function of the predecessors' current states, taken again whenever a planned step is stored or
merged and whenever a task of a flow that still has planned steps changes state, so it does not
depend on the order events arrive in. Only flows with planned steps pay anything: the check is the
flow's PLANNED count, and the rows are read through the partial index `tasks_planned`.

The write path (store/write.py) writes the changes this module decides through its TaskChange /
update_counts / write_tasks, so flow and per-name counts and the live feed's `seq` stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from celery_flow.events import MAX_PLAN_STEPS, Event, PlanStep
from celery_flow.flow.model import FAILED_STATES, TaskDetail, TaskState
from celery_flow.store.connection import Session, meta_value, select_in
from celery_flow.store.rows import (
    TASK_SELECT,
    FlowRecord,
    TaskRow,
    fetch_in,
    json_decoder,
    json_encoder,
    task_from_row,
    task_row,
)

# States of a row that has no events: a plan made it, and a plan may still change it.
STEP_STATES = frozenset({"PLANNED", "NOT_RUN"})
_ID_MAX = 255
_NAME_MAX = 512
# The states of a task that decide the steps after it (a step waits while its tasks are unfinished).
_DECIDING = FAILED_STATES | {"SUCCESS"}
_VERB = {"FAILURE": "failed", "REVOKED": "was revoked", "REJECTED": "was rejected", "LOST": "was lost"}


class Change(Protocol):
    """A task's row before a batch and its fold after (the write path's TaskChange)."""

    @property
    def old(self) -> TaskRow | None: ...
    @property
    def new(self) -> TaskDetail: ...


class StepChange(NamedTuple):
    """A planned step's row before (None if new) and after, its number and its extra JSON."""

    old: TaskRow | None
    new: TaskDetail
    num: int
    extra: str


@dataclass
class _Step:
    """A planned step being decided: its task as it will be stored, and what it runs after."""

    task: TaskDetail
    after: list[tuple[str, str]] = field(default_factory=list)
    row: TaskRow | None = None


def plan_changes(
    session: Session,
    fresh: Sequence[Event],
    changes: Sequence[Change],
    flows: Mapping[str, FlowRecord],
) -> list[StepChange]:
    """The planned steps to write after a batch: those the plans of `fresh` events name, and those of
    flows with planned steps whose tasks finished (`changes`, `flows`: the batch's tasks and their
    flows after it). Nothing is read, at the cost of two checks, for a batch with no plan in a flow with
    no planned steps. New rows get their numbers here."""
    plans = sorted((e for e in fresh if e.plan), key=lambda e: (e.ts, e.id))
    moved = {
        flow.fnum
        for c in changes
        if c.new.state in _DECIDING
        and (c.old is None or c.old.state != c.new.state)
        and (flow := flows.get(c.new.root_id or c.new.task_id)) is not None
        and flow.counts.get("PLANNED", 0) > 0
    }
    if not plans and not moved:
        return []
    steps = _planned(session, sorted(moved))
    _merge_plans(session, plans, steps)
    if not steps:
        return []
    known: dict[str, tuple[str, str | None]] = {c.new.task_id: (c.new.state, c.new.reason) for c in changes}
    _decide(session, steps, known)
    return _changes(session, steps)


def _planned(session: Session, fnums: list[int]) -> dict[str, _Step]:
    """The PLANNED rows of these flows."""
    rows = fetch_in(session, TaskRow, TASK_SELECT + " WHERE fnum IN {} AND state = 'PLANNED'", fnums)
    return {row.task_id: _from_row(row) for row in rows}


def _from_row(row: TaskRow) -> _Step:
    task: TaskDetail = task_from_row(row, TaskDetail)
    extra = json_decoder.decode(row.extra) if row.extra else {}
    after = [(str(a[0]), str(a[1])) for a in extra.get("after", ()) if isinstance(a, list) and len(a) == 2]
    return _Step(task, after, row)


def _merge_plans(session: Session, plans: Iterable[Event], steps: dict[str, _Step]) -> None:
    """Add the plans' steps to `steps`: new ones, or merged into the stored planned row of that id;
    a task that has events is left alone."""
    described: dict[str, tuple[Event, PlanStep]] = {}
    afters: dict[str, set[tuple[str, str]]] = {}
    for event in plans:
        for step in (event.plan or ())[:MAX_PLAN_STEPS]:
            task_id = step.task_id
            if not task_id or len(task_id) > _ID_MAX or "\x00" in task_id:
                continue  # not an id any event could carry (events.decode refuses those)
            described.setdefault(task_id, (event, step))
            afters.setdefault(task_id, set()).update((_clip(a), step.on) for a in step.after)
    if not described:
        return
    stored = {
        row.task_id: row
        for row in fetch_in(session, TaskRow, TASK_SELECT + " WHERE task_id IN {}", sorted(described))
    }
    for task_id, (event, plan_step) in described.items():
        row = stored.get(task_id)
        if row is not None and row.state not in STEP_STATES:
            continue  # it has events: the fold owns it
        current = steps.get(task_id)
        if current is None:
            current = steps[task_id] = _from_row(row) if row is not None else _new_step(event, plan_step)
        _fill(current, event, plan_step)
        current.after = sorted(afters[task_id].union(current.after))


def _clip(value: str) -> str:
    return value[:_ID_MAX].replace("\x00", "\ufffd")


def _new_step(event: Event, step: PlanStep) -> _Step:
    task = TaskDetail(
        task_id=step.task_id,
        name=None,
        state="PLANNED",
        root_id=event.root_id or event.task_id,
        trace_id=event.trace_id,
        updated_at=event.ts,
    )
    return _Step(task)


def _fill(step: _Step, event: Event, plan: PlanStep) -> None:
    """Fill in what the stored step does not know yet from one more plan naming it."""
    task = step.task
    if task.updated_at is None or event.ts < task.updated_at:
        task.updated_at = event.ts  # known since the earliest plan naming it, whatever arrived first
    if task.name is None and plan.name:
        task.name = plan.name[:_NAME_MAX].replace("\x00", "\ufffd")
    for name in ("parent_id", "group_id", "chord_id"):
        value = getattr(plan, name)
        if getattr(task, name) is None and value and value != task.task_id:
            setattr(task, name, _clip(value))
    for name in ("links", "link_errors"):
        have: list[str] = getattr(task, name)
        present = {*have, task.task_id}
        have.extend(c for c in dict.fromkeys(map(_clip, getattr(plan, name) or ())) if c not in present)


def _decide(session: Session, steps: dict[str, _Step], known: dict[str, tuple[str, str | None]]) -> None:
    """Set each step's state and reason from its predecessors', to a fixed point (a step that never
    runs stops the steps after it)."""
    wanted = sorted({a for s in steps.values() for a, _ in s.after if a not in steps and a not in known})
    for task_id, state, extra in select_in(
        session, "SELECT task_id, state, extra FROM tasks WHERE task_id IN {}", wanted
    ):
        reason = json_decoder.decode(extra).get("reason") if state == "NOT_RUN" and extra else None
        known[task_id] = (state, reason)

    def state_of(task_id: str) -> tuple[str | None, str | None]:
        step = steps.get(task_id)
        if step is not None:
            return step.task.state, step.task.reason
        return known.get(task_id, (None, None))

    for _ in range(len(steps) + 1):
        settled = True
        for step in steps.values():
            state, reason = _verdict(step.after, state_of)
            if (state, reason) != (step.task.state, step.task.reason):
                step.task.state, step.task.reason = state, reason
                settled = False
        if settled:
            return


def _verdict(after: list[tuple[str, str]], state_of: Any) -> tuple[TaskState, str | None]:
    """PLANNED, or NOT_RUN and why, for a step run after `after` ((task id, condition) pairs)."""
    errbacks: list[tuple[str, str | None, str | None]] = []
    for task_id, on in after:
        state, reason = state_of(task_id)
        if on == "failure":
            errbacks.append((task_id, state, reason))
        elif state in FAILED_STATES:
            return "NOT_RUN", f"upstream {task_id} {_VERB[state]}"
        elif state == "NOT_RUN":
            return "NOT_RUN", _inherited(task_id, reason)
    # An errback runs if one of its tasks fails: not needed once each succeeded or never ran.
    if errbacks and len(errbacks) == len(after) and all(s in ("SUCCESS", "NOT_RUN") for _, s, _ in errbacks):
        for task_id, state, _ in errbacks:
            if state == "SUCCESS":
                return "NOT_RUN", f"not needed: upstream {task_id} succeeded"
        task_id, _, reason = errbacks[0]
        return "NOT_RUN", _inherited(task_id, reason)
    return "PLANNED", None


def _inherited(task_id: str, reason: str | None) -> str:
    """The reason of a step after one that never ran: the same upstream cause, when there is one."""
    if reason and reason.startswith("upstream "):
        return reason
    return f"upstream {task_id} never ran"


def _changes(session: Session, steps: dict[str, _Step]) -> list[StepChange]:
    """The steps whose row is new or differs, numbering the new ones (and counting them as tasks)."""
    last_num = first_num = meta_value(session, "task_num")
    out: list[StepChange] = []
    for _, step in sorted(steps.items()):
        extra = _extra(step)
        row = step.row
        if row is None:
            last_num += 1
            out.append(StepChange(None, step.task, last_num, extra))
        elif (row.state, row.extra) != (step.task.state, extra) or not _same_lineage(row, step.task):
            out.append(StepChange(row, step.task, int(row.num), extra))
    if last_num != first_num:
        session.run("UPDATE meta SET value = ? WHERE key = 'task_num'", (last_num,))
        session.run("UPDATE meta SET value = value + ? WHERE key = 'tasks'", (last_num - first_num,))
    return out


def _same_lineage(row: TaskRow, task: TaskDetail) -> bool:
    return (row.name, row.parent_id, row.group_id, row.chord_id, row.updated_at) == (
        task.name, task.parent_id, task.group_id, task.chord_id, task.updated_at,
    )  # fmt: skip


def _extra(step: _Step) -> str:
    """The row's extra JSON: what task_row stores, plus the steps it runs after."""
    extra: dict[str, Any] = json_decoder.decode(task_row(step.task, 0, 0, 0).extra)
    extra["after"] = [list(a) for a in step.after]
    return json_encoder.encode(extra).decode("utf-8")
