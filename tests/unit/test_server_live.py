"""The live hub's fan-out: a slow client is dropped, never slowing the others; filters match flows."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from celery_flow.flow.model import TaskSummary
from celery_flow.server.live import LiveClient, LiveFilter, LiveHub


async def _no_status() -> tuple[str, str | None]:
    return "ok", None


def make_hub(queue_size: int) -> LiveHub:
    def no_store() -> Any:
        raise AssertionError("publish() must not touch the store")

    return LiveHub(no_store, _no_status, queue_size=queue_size)


def client(hub: LiveHub, flt: LiveFilter | None = None) -> LiveClient:
    c = LiveClient(websocket=None, queue=asyncio.Queue(maxsize=hub.queue_size), filter=flt or LiveFilter())  # type: ignore[arg-type]
    hub.clients.add(c)
    return c


def task(task_id: str, root_id: str, trace_id: str | None = None) -> TaskSummary:
    return TaskSummary(task_id=task_id, name="t.add", state="SUCCESS", root_id=root_id, trace_id=trace_id)


def drain(c: LiveClient) -> list[Any]:
    out = []
    while not c.queue.empty():
        frame = c.queue.get_nowait()
        out.append(None if frame is None else msgspec.json.decode(frame))
    return out


def test_a_slow_client_is_dropped_and_the_others_get_every_frame() -> None:
    hub = make_hub(queue_size=3)
    slow, fast = client(hub), client(hub)
    received = []
    for n in range(10):
        hub.publish([task(f"t{n}", f"t{n}")])
        received += drain(fast)
    assert [f["items"][0]["task_id"] for f in received] == [f"t{n}" for n in range(10)]
    assert slow.dropped
    assert slow not in hub.clients
    assert drain(slow) == [None]  # its sender closes the socket (code 1013)
    assert hub.slow_disconnects == 1


def test_filters_by_root_or_trace() -> None:
    hub = make_hub(queue_size=10)
    by_root = client(hub, LiveFilter(root_id="r1"))
    by_trace = client(hub, LiveFilter(trace_id="tr"))
    everything = client(hub)
    hub.publish([task("r1", "r1"), task("c1", "r1"), task("x", "r2", trace_id="tr"), task("y", "r3")])
    ids = lambda c: [i["task_id"] for f in drain(c) for i in f["items"]]  # noqa: E731
    assert ids(by_root) == ["r1", "c1"]
    assert ids(by_trace) == ["x"]
    assert ids(everything) == ["r1", "c1", "x", "y"]
