"""Events for tests: build them (`event`, `finished_task`) and read them straight from the transport
(`EventLog`, `collect_events`; any transport from `from_url`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, cast

from celery_flow.events import SCHEMA_VERSION, Event, EventType, decode
from celery_flow.settings import DEFAULT_GROUP
from celery_flow.transport import from_url
from tests.support.wait import WaitTimeout, wait_for

__all__ = ["EventLog", "collect_events", "event", "events_for", "finished_task", "has"]

FINISHED = ("sent", "received", "started", "succeeded")


def event(type_: str, task_id: str | None = None, ts: float | None = None, **fields: Any) -> Event:
    """An event of `type_` for `task_id` at `ts` (now if None), with a fresh id unless `id=` is given;
    `fields` are Event's own (another key raises TypeError, as Event does)."""
    fields.setdefault("id", uuid.uuid4().hex)
    kind = cast("EventType", type_)  # callers loop over plain strings; Event() does not check it
    return Event(v=SCHEMA_VERSION, type=kind, ts=time.time() if ts is None else ts, task_id=task_id, **fields)


def finished_task(
    task_id: str, ts: float | None = None, step: float = 0.001, name: str = "t.work", **fields: Any
) -> list[Event]:
    """The sent, received, started and succeeded events of one run of `task_id`, `step` seconds apart
    from `ts` (now if None); each carries `name`, root_id `task_id`, retries 0 and `fields`."""
    base = time.time() if ts is None else ts
    common = {"name": name, "root_id": task_id, "retries": 0, **fields}
    return [event(type_, task_id, base + i * step, **common) for i, type_ in enumerate(FINISHED)]


class EventLog:
    """A subscription that keeps every event it has read; `wait_for(pred)` polls until pred holds."""

    def __init__(self, url: str, prefix: str) -> None:
        self.transport = from_url(url, prefix=prefix)
        # A group of its own sees every event on Redis and RabbitMQ; on SQS (no fan-out without SNS) the
        # reader shares the default group's queue, so no server may consume the same prefix meanwhile.
        group = DEFAULT_GROUP if url.startswith("sqs://") else f"test-{uuid.uuid4().hex[:6]}"
        self.sub = self.transport.subscribe(group, "reader")
        self.events: list[Event] = []

    def poll(self, timeout: float = 0.2) -> list[Event]:
        messages = self.sub.read(1000, timeout)
        new = [decode(m.data) for m in messages]
        if messages:
            self.sub.ack([m.id for m in messages])
        self.events.extend(new)
        return new

    def wait_for(self, until: Callable[[list[Event]], bool], timeout: float = 15.0) -> list[Event]:
        """Every event read, once `until(events)` holds; on timeout the error lists the last 40."""

        def check() -> list[Event] | None:
            if until(self.events):
                return self.events
            self.poll(0.2)  # blocks up to 0.2 s while nothing arrives: the poll needs no other pause
            return None

        try:
            return wait_for(check, timeout, "the events", interval=0, retry_on=())
        except WaitTimeout as exc:
            shown = ", ".join(f"{e.type}:{e.name or ''}:{(e.task_id or '')[:8]}" for e in self.events[-40:])
            raise AssertionError(f"{exc}; {len(self.events)} events: {shown}") from None

    def wait_drops_reported(self, task_id: str, dropped_total: int, timeout: float) -> list[Event]:
        """The events once `task_id` succeeded and the `publisher.dropped` reports add up to
        `dropped_total` (the publisher's own count: every drop reported, none twice)."""
        return self.wait_for(
            lambda ev: (
                any(e.task_id == task_id and e.type == "succeeded" for e in ev)
                and sum(e.dropped or 0 for e in ev if e.type == "publisher.dropped") == dropped_total
            ),
            timeout=timeout,
        )

    def close(self) -> None:
        self.sub.close()
        self.transport.close()


def collect_events(
    url: str,
    prefix: str,
    until: Callable[[list[Event]], bool],
    timeout: float = 15.0,
) -> list[Event]:
    """Every event on the stream/queue of `prefix`, read until `until(events)` holds (else AssertionError).

    A new consumer group reads from the beginning of a Redis stream; on RabbitMQ it reads the shared queue.
    """
    log = EventLog(url, prefix)
    try:
        return log.wait_for(until, timeout)
    finally:
        log.close()


def events_for(events: Iterable[Event], task_id: str, type_: str | None = None) -> list[Event]:
    return [e for e in events if e.task_id == task_id and (type_ is None or e.type == type_)]


def has(events: Iterable[Event], task_id: str, type_: str) -> bool:
    return any(e.task_id == task_id and e.type == type_ for e in events)
