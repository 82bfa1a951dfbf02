"""Finished tasks as OpenTelemetry spans: pure mapping from a `TaskDetail` to a `ReadableSpan`, no I/O.

Spans are built by hand (`ReadableSpan` with explicit `SpanContext`s) rather than through a tracer: a
tracer picks random span ids and "now" as timestamps, but a task's span has to carry the task's own
start/end times and be referenced by its children, which may be exported before or after it (events
arrive in any order, a flow may span hours). So ids are derived deterministically from task ids, and a
parent is named by id without having to be exported first.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from celery_flow.flow.model import TaskDetail

__all__ = ["span_id_for", "task_span", "trace_id_for"]

_HEX32 = re.compile(r"[0-9a-f]{32}")
# "ValueError: boom", "ValueError('boom')", "pkg.mod.Error" -> type and message.
_EXCEPTION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?::\s*(?P<colon>.*)|\((?P<paren>.*)\))?\s*$", re.DOTALL)
_MAX_ATTRIBUTE = 4096


def span_id_for(task_id: str) -> int:
    """A stable, non-zero 64-bit span id for a task id, so children can name their parent's span."""
    value = int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(), "big")
    return value or 1


def trace_id_for(task: TaskDetail) -> int:
    """The 128-bit OpenTelemetry trace id of a task's span.

    A celery-flow trace id that is already a W3C trace id (32 lowercase hex, e.g. taken from a
    `traceparent` header by the middleware) is used as is, so the task spans land in the user's own
    OpenTelemetry trace of that request. Any other trace id is hashed, so every task of one celery-flow
    trace still shares one OpenTelemetry trace. Without a trace id the flow's root id decides.
    """
    trace_id = (task.trace_id or "").strip().lower()
    if _HEX32.fullmatch(trace_id) and int(trace_id, 16):
        return int(trace_id, 16)
    key = trace_id or task.root_id or task.task_id
    if not trace_id:
        try:
            value = uuid.UUID(key).int
        except ValueError:
            value = 0
        if value:
            return value
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=16).digest(), "big")
    return value or 1


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)


def _split_exception(text: str) -> tuple[str, str]:
    match = _EXCEPTION.match(text.splitlines()[0] if text.strip() else text)
    if match is None:
        return "Exception", text
    message = match.group("colon") or match.group("paren") or ""
    return match.group(1), message.strip("'\"") if match.group("paren") else message


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unknown values (None) and cap strings: attributes must be primitive and reasonably small."""
    cleaned: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if isinstance(value, str) and len(value) > _MAX_ATTRIBUTE:
            value = value[:_MAX_ATTRIBUTE] + "…"
        cleaned[key] = value
    return cleaned


def task_span(
    task: TaskDetail, resource: Resource | None = None, scope: InstrumentationScope | None = None
) -> ReadableSpan:
    """The span of one finished task (OpenTelemetry messaging semantic conventions, `process` span)."""
    trace_id = trace_id_for(task)
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace_id, span_id_for(task.task_id), is_remote=False, trace_flags=flags)
    parent_task = task.parent_id if task.parent_id and task.parent_id != task.task_id else None
    parent = (
        SpanContext(trace_id, span_id_for(parent_task), is_remote=True, trace_flags=flags)
        if parent_task
        else None
    )

    start = task.started_at or task.received_at or task.sent_at or task.finished_at or task.updated_at or 0.0
    end = task.finished_at or task.updated_at or start
    start = min(start, end)

    queued = task.started_at - task.sent_at if task.started_at and task.sent_at else None
    attributes = _clean(
        {
            "messaging.system": "celery",
            "messaging.operation.type": "process",
            "messaging.operation.name": "run",
            "messaging.message.id": task.task_id,
            "messaging.destination.name": task.queue,
            "messaging.client.id": task.hostname,
            "celery.task.name": task.name,
            "celery.task_id": task.task_id,
            "celery.root_id": task.root_id,
            "celery.parent_id": parent_task,
            "celery.group_id": task.group_id,
            "celery.chord_id": task.chord_id,
            "celery.hostname": task.hostname,
            "celery.pid": task.pid,
            "celery.state": task.state,
            "celery.retries": task.retries,
            "celery.runtime_seconds": task.runtime,
            "celery.queued_seconds": max(queued, 0.0) if queued is not None else None,
            "celery_flow.trace_id": task.trace_id,
        }
    )

    events: list[SpanEvent] = []
    if queued is not None and task.started_at is not None:
        events.append(
            SpanEvent(
                "celery.queued",
                _clean(
                    {
                        "celery.queued_seconds": max(queued, 0.0),
                        "celery.received_seconds": (
                            max(task.started_at - task.received_at, 0.0) if task.received_at else None
                        ),
                        "messaging.destination.name": task.queue,
                    }
                ),
                timestamp=_ns(task.started_at),
            )
        )
    for record in task.events:
        if record.type == "retried":
            events.append(
                SpanEvent(
                    "celery.retry",
                    _clean(
                        {
                            "celery.retries": record.retries,
                            "celery.retry.reason": record.reason or record.exception,
                            "celery.hostname": record.hostname,
                        }
                    ),
                    timestamp=_ns(record.ts),
                )
            )
        elif record.type in {"revoked", "rejected"}:
            events.append(
                SpanEvent(
                    f"celery.{record.type}",
                    _clean({"celery.reason": record.reason}),
                    timestamp=_ns(record.ts),
                )
            )

    status = Status(StatusCode.UNSET)
    if task.state == "FAILURE":
        description = task.exception or "task failed"
        exc_type, exc_message = _split_exception(description)
        status = Status(StatusCode.ERROR, description[:_MAX_ATTRIBUTE])
        events.append(
            SpanEvent(
                "exception",
                _clean(
                    {
                        "exception.type": exc_type,
                        "exception.message": exc_message,
                        "exception.stacktrace": task.traceback,
                    }
                ),
                timestamp=_ns(end),
            )
        )
    elif task.state == "SUCCESS":
        status = Status(StatusCode.OK)

    return ReadableSpan(
        name=task.name or "celery.task",
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=sorted(events, key=lambda event: event.timestamp),
        kind=SpanKind.CONSUMER,
        status=status,
        start_time=_ns(start),
        end_time=_ns(end),
        instrumentation_scope=scope,
    )
