"""Fold the events of one task into its state, timestamps, timeline and details.

Why a fold rather than a state machine fed in arrival order: events reach the server through a shared
stream from several processes, so they can arrive late, twice, or out of order (a `succeeded` before its
`started`). Sorting the task's whole event set by (attempt, lifecycle rank, ts) and folding it gives the
same answer whatever the arrival order, and folding a set twice changes nothing.

Attempt ordering is what makes retries work: attempt n+1's `sent`/`received`/`started` carry
`retries=n+1` and therefore supersede attempt n's `retried` (DESIGN.md, common conventions).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from celery_flow.events import Event
from celery_flow.flow.fingerprint import cause
from celery_flow.flow.model import EventRecord, Segment, SegmentKind, TaskDetail, TaskState

# Lifecycle rank of each event type inside one attempt.
EVENT_RANK: Final[dict[str, int]] = {
    "sent": 0,
    "received": 1,
    "started": 2,
    "retried": 3,
    "succeeded": 4,
    "failed": 4,
    "revoked": 4,
    "rejected": 4,
}
EVENT_STATE: Final[dict[str, TaskState]] = {
    "sent": "PENDING",
    "received": "RECEIVED",
    "started": "STARTED",
    "retried": "RETRY",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "revoked": "REVOKED",
    "rejected": "REJECTED",
}
TERMINAL_EVENTS: Final = frozenset({"succeeded", "failed", "revoked", "rejected"})
# The timeline segment an event opens; terminal events close the current one and open none.
EVENT_SEGMENT: Final[dict[str, SegmentKind]] = {
    "sent": "queued",
    "received": "received",
    "started": "running",
    "retried": "retry",
}
SEGMENT_STATE: Final[dict[str, str]] = {
    "queued": "PENDING",
    "received": "RECEIVED",
    "running": "STARTED",
    "retry": "RETRY",
}


def event_key(event: Event) -> tuple[int, int, float, str]:
    """Total order of one task's events: attempt, then lifecycle rank, then time, then id (stable)."""
    return (event.retries or 0, EVENT_RANK.get(event.type, 5), event.ts, event.id)


def order_events(events: Iterable[Event]) -> list[Event]:
    """Task events deduplicated by id and sorted by `event_key`; non-task events are dropped."""
    unique: dict[str, Event] = {}
    for event in events:
        if event.type in EVENT_RANK:
            unique.setdefault(event.id, event)
    return sorted(unique.values(), key=event_key)


def fold_task(task_id: str, events: Iterable[Event]) -> TaskDetail:
    """Everything the events of `task_id` say about it (children are the store's business)."""
    ordered = order_events(events)
    task = TaskDetail(task_id=task_id, name=None, state="PENDING")
    if not ordered:
        return task

    last = ordered[-1]
    task.state = EVENT_STATE[last.type]
    task.retries = last.retries or 0  # the highest: `event_key` orders by attempt first
    updated = last.ts
    started: Event | None = None  # the first `started`, in order

    links: list[str] = []
    link_errors: list[str] = []
    records = task.events
    for event in ordered:
        if event.ts > updated:
            updated = event.ts
        # Identity and lineage: the first value seen in logical order wins. A retry is re-published from
        # inside the task itself, so its `parent_id` is the task: never let that become the parent.
        if task.name is None and event.name:
            task.name = event.name
        if task.root_id is None and event.root_id:
            task.root_id = event.root_id
        if task.parent_id is None and event.parent_id and event.parent_id != task_id:
            task.parent_id = event.parent_id
        if task.group_id is None and event.group_id:
            task.group_id = event.group_id
        if task.chord_id is None and event.chord_id and event.chord_id != task_id:
            task.chord_id = event.chord_id
        if task.trace_id is None and event.trace_id:
            task.trace_id = event.trace_id
        if task.queue is None and event.queue:
            task.queue = event.queue
        if task.args is None and event.args is not None:
            task.args = event.args
        if task.kwargs is None and event.kwargs is not None:
            task.kwargs = event.kwargs
        for link in event.links or ():
            if link not in links and link != task_id:
                links.append(link)
        for link in event.link_errors or ():
            if link not in link_errors and link != task_id:
                link_errors.append(link)
        # Where it ran: the latest worker-side event (sent events carry no worker hostname).
        if event.type != "sent" and event.hostname:
            task.hostname = event.hostname
            if event.pid is not None:
                task.pid = event.pid
        # Scheduling of the latest attempt.
        if event.eta is not None:
            task.eta = event.eta
        if event.expires is not None:
            task.expires = event.expires
        # First time each step happened, so sent <= received <= started <= finished on a normal run.
        if event.type == "sent" and task.sent_at is None:
            task.sent_at = event.ts
        elif event.type == "received" and task.received_at is None:
            task.received_at = event.ts
        elif event.type == "started" and started is None:
            started = event
            task.started_at = event.ts
        records.append(_record(event))
    task.updated_at = updated

    if task.root_id is None:
        # Celery's root is its own root; a task without lineage headers is the root of its own flow.
        task.root_id = task_id
    task.links = links
    task.link_errors = link_errors

    if last.type in TERMINAL_EVENTS:
        task.finished_at = last.ts
        task.runtime = last.runtime
        task.exception = last.exception or (last.reason if last.type != "succeeded" else None)
        task.traceback = last.traceback
        if last.type == "succeeded":
            task.result = last.result
    elif last.type == "retried":
        # Why it is waiting for another attempt.
        task.exception = last.exception or last.reason
        task.traceback = last.traceback
    task.fingerprint = fingerprint(task)

    task.segments = build_segments(ordered)
    task.durations = segment_durations(task.segments)
    task.queue_wait = queue_wait(ordered, started)
    return task


def fingerprint(task: TaskDetail) -> str | None:
    """The cluster of the task's latest failure or retry: a FAILURE's own, else its latest retry's (a
    revoked, rejected or lost task has no traceback of its own; it keeps the cause it retried for)."""
    records = task.events if task.state != "FAILURE" else task.events[-1:]
    for record in reversed(records):
        if record.fingerprint is not None:
            return record.fingerprint
    return None


def queue_wait(ordered: list[Event], started: Event | None) -> float | None:
    """Seconds the first attempt that started waited for a worker once it could run.

    The wait runs from that attempt's first `sent` (its first `received` when no `sent` was stored),
    or from its ETA/countdown when later (a scheduled delay is not a wait), to its `started`. Never
    negative (producer and worker clocks may disagree); None until an attempt started, or when nothing
    says when it was queued.
    """
    if started is None:
        return None
    attempt = started.retries or 0
    sent: float | None = None
    received: float | None = None
    eta: float | None = None
    for e in ordered:
        if (e.retries or 0) != attempt:
            continue
        if e.type == "sent":
            sent = e.ts if sent is None else min(sent, e.ts)
        elif e.type == "received":
            received = e.ts if received is None else min(received, e.ts)
        else:
            continue
        if e.eta is not None:
            eta = e.eta if eta is None else max(eta, e.eta)
    queued = sent if sent is not None else received
    if queued is None:
        return None
    ready = max(queued, eta) if eta is not None else queued
    return max(0.0, started.ts - ready)


def build_segments(ordered: list[Event]) -> list[Segment]:
    """Timeline of an ordered event list: each event opens a segment that the next event closes.

    Clocks of producer and worker may disagree slightly; an end never precedes its start.
    """
    segments: list[Segment] = []
    for event in ordered:
        if segments and segments[-1].end is None:
            segments[-1].end = max(segments[-1].start, event.ts)
        kind = EVENT_SEGMENT.get(event.type)
        if kind is not None:
            segments.append(Segment(kind=kind, start=event.ts))
    return segments


def segment_durations(segments: list[Segment]) -> dict[str, float]:
    """Seconds spent per state over closed segments (an ongoing segment has no duration yet)."""
    durations: dict[str, float] = {}
    for segment in segments:
        if segment.end is None:
            continue
        state = SEGMENT_STATE[segment.kind]
        durations[state] = durations.get(state, 0.0) + (segment.end - segment.start)
    return durations


def _record(event: Event) -> EventRecord:
    """The record of one event (positional, in EventRecord's field order: one per event per fold)."""
    kind = event.type
    failed = kind == "failed" or kind == "retried"
    return EventRecord(
        event.id, kind, event.ts, event.hostname, event.pid, event.retries, event.exception,
        event.traceback, event.reason, event.runtime,
        cause(event.exception or event.reason, event.traceback).fingerprint if failed else None,
    )  # fmt: skip
