"""Trace ids: one correlation id for everything a request caused, carried across every task it spawns.

The id lives in a ContextVar while a `trace()` scope is active (so threads and asyncio tasks each keep
their own), travels to descendant tasks in the message header `celery_flow_trace_id`, and inside a task is
read back from the task's request. Middlewares build on `set_trace_id` / `reset_trace_id`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar, cast

__all__ = [
    "TRACE_HEADER",
    "current_trace_id",
    "new_trace_id",
    "reset_trace_id",
    "set_trace_id",
    "trace",
]

#: The message header that carries the trace id from a producer to every descendant task.
TRACE_HEADER: Final = "celery_flow_trace_id"
#: The message header carrying a flow root that differs from Celery's `root_id` (see hooks.flow_root).
ROOT_HEADER: Final = "celery_flow_root_id"

_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("celery_flow_trace_id", default=None)

F = TypeVar("F", bound=Callable[..., Any])


def new_trace_id() -> str:
    return uuid.uuid4().hex


def set_trace_id(trace_id: str | None = None) -> contextvars.Token[str | None]:
    """Make `trace_id` (a fresh one when None) current; pass the token to `reset_trace_id` to undo."""
    return _trace_id.set(trace_id or new_trace_id())


def reset_trace_id(token: contextvars.Token[str | None]) -> None:
    _trace_id.reset(token)


_task_stack: Any = None


def executing_task() -> Any:
    """The Celery task executing in this thread (None outside a task)."""
    global _task_stack
    if _task_stack is None:
        from celery._state import _task_stack as stack

        _task_stack = stack
    return _task_stack.top


def _task_trace_id() -> str | None:
    """The trace id of the task executing in this thread, from its message headers."""
    task = executing_task()
    if task is None:
        return None
    request = task.request
    value = getattr(request, TRACE_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            value = headers.get(TRACE_HEADER)
    return value if isinstance(value, str) and value else None


_otel: Any = None
_otel_checked = False


def _otel_trace_id() -> str | None:
    """The W3C trace id (32 hex digits) of the active OpenTelemetry span, if OpenTelemetry is installed."""
    global _otel, _otel_checked
    if not _otel_checked:
        _otel_checked = True
        try:
            from opentelemetry import trace as otel_trace

            _otel = otel_trace
        except ImportError:
            _otel = None
    if _otel is None:
        return None
    try:
        ctx = _otel.get_current_span().get_span_context()
        if ctx.is_valid:
            return format(ctx.trace_id, "032x")
    except Exception:
        return None
    return None


def current_trace_id() -> str | None:
    """The trace id in effect here: an enclosing `trace()` scope, else the executing task's, else the
    active OpenTelemetry span's; None when there is none."""
    value = _trace_id.get()
    if value is not None:
        return value
    return _task_trace_id() or _otel_trace_id()


def publish_trace_id(headers: dict[str, Any]) -> str | None:
    """current_trace_id() for a message being published, with its headers: the task lookup only when
    Celery says a worker task is publishing (it sets `parent_id` then), as this runs on every publish."""
    value = headers.get(TRACE_HEADER) or _trace_id.get()
    if value is not None:
        return value
    return (_task_trace_id() if headers.get("parent_id") else None) or _otel_trace_id()


class trace:
    """Context manager and decorator: everything published inside carries one trace id.

    `with celery_flow.trace() as trace_id:` generates an id (uuid4 hex) unless one is given;
    `@celery_flow.trace()` gives each call of the decorated function its own scope (a fresh id per call
    unless an id was given).
    """

    def __init__(self, trace_id: str | None = None) -> None:
        if trace_id is not None and not isinstance(trace_id, str):
            raise TypeError(
                "celery_flow.trace() takes an optional string id; as a decorator write @celery_flow.trace()"
            )
        self.trace_id = trace_id
        self._tokens: list[contextvars.Token[str | None]] = []

    def __enter__(self) -> str:
        value = self.trace_id or new_trace_id()
        self._tokens.append(_trace_id.set(value))
        return value

    def __exit__(self, *exc: object) -> None:
        _trace_id.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        given = self.trace_id
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _scope(given):
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _scope(given):
                return func(*args, **kwargs)

        return cast(F, wrapper)


@contextmanager
def _scope(trace_id: str | None) -> Iterator[str]:
    token = _trace_id.set(trace_id or new_trace_id())
    try:
        yield cast(str, _trace_id.get())
    finally:
        _trace_id.reset(token)
