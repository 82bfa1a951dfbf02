"""The consumer bootstep's strategy wrapper: every task message is reported `received` exactly once, a
consumer restart (which rebuilds the strategies) is wrapped again, nobody else's wrapper is lost, and
the app's tracker of the moment gets the event (none after shutdown, the new one after a re-init)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

import celery_flow
from celery_flow.events import Event, decode
from celery_flow.tracking.hooks import Tracker
from celery_flow.tracking.worker import receive_through
from celery_flow.transport.memory import MemoryTransport


@pytest.fixture
def tracked() -> Iterator[tuple[Tracker, MemoryTransport]]:
    url = f"memory://{uuid.uuid4().hex}"
    app = Celery("receive_test", broker="memory://", set_as_current=False)
    tracker = celery_flow.init(app, transport_url=url, prefix="p")
    try:
        yield tracker, MemoryTransport(url, prefix="p")
    finally:
        celery_flow.shutdown(app)


def message(task_id: str) -> Any:
    """A protocol-2 task message as the consumer hands it to a strategy (headers carry the identity)."""
    headers = {"id": task_id, "task": "t.add", "root_id": task_id, "parent_id": None, "retries": 0}
    return SimpleNamespace(headers=headers, delivery_info={"routing_key": "q"}, payload=((), {}, {}))


def received(tracker: Tracker, transport: MemoryTransport) -> list[Event]:
    assert tracker.publisher.flush(5)
    return [e for e in map(decode, transport.entries()) if e.type == "received"]


def test_each_message_is_received_once_even_after_repeated_starts(
    tracked: tuple[Tracker, MemoryTransport],
) -> None:
    tracker, transport = tracked
    handled: list[str] = []

    def strategy(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> None:
        handled.append(message.headers["id"])

    strategies: dict[str, Any] = {"t.add": strategy}
    receive_through(strategies, tracker.app, "celery@w1")
    receive_through(strategies, tracker.app, "celery@w1")  # the same consumer started again
    strategies["t.add"](message("a"), None, None, None, [])
    assert handled == ["a"]
    events = received(tracker, transport)
    assert [(e.task_id, e.hostname, e.queue) for e in events] == [("a", "celery@w1", "q")]

    strategies["t.add"] = strategy  # a consumer restart rebuilds the strategies: wrapped again
    receive_through(strategies, tracker.app, "celery@w1")
    strategies["t.add"](message("b"), None, None, None, [])
    assert handled == ["a", "b"]
    assert [e.task_id for e in received(tracker, transport)] == ["a", "b"]


def test_a_foreign_wrapper_around_the_strategy_is_kept(tracked: tuple[Tracker, MemoryTransport]) -> None:
    tracker, transport = tracked
    calls: list[str] = []

    def strategy(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> None:
        calls.append("strategy")

    @functools.wraps(strategy)
    def theirs(*args: Any) -> None:  # another library's instrumentation, made with functools.wraps
        calls.append("theirs")
        strategy(*args)

    strategies: dict[str, Any] = {"t.add": theirs}
    receive_through(strategies, tracker.app, "celery@w1")
    strategies["t.add"](message("c"), None, None, None, [])
    assert calls == ["theirs", "strategy"]
    assert [e.task_id for e in received(tracker, transport)] == ["c"]


def test_the_wrapper_follows_the_apps_tracker_across_shutdown_and_init(
    tracked: tuple[Tracker, MemoryTransport],
) -> None:
    tracker, transport = tracked
    app = tracker.app
    handled: list[str] = []

    def strategy(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> None:
        handled.append(message.headers["id"])

    strategies: dict[str, Any] = {"t.add": strategy}
    receive_through(strategies, app, "celery@w1")
    celery_flow.shutdown(app)
    strategies["t.add"](message("untracked"), None, None, None, [])  # still handled, not reported
    assert tracker.publisher.flush(0)  # nothing waits to be sent: not even recorded into the stopped tracker
    again = celery_flow.init(app, transport_url=tracker.settings.transport_url, prefix="p")
    strategies["t.add"](message("tracked"), None, None, None, [])
    assert handled == ["untracked", "tracked"]
    assert [e.task_id for e in received(again, transport)] == ["tracked"]
