"""WS /api/live pushes committed task changes: real worker, Redis, uvicorn, no REST polling."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from tests.support.events import event
from tests.support.server_helpers import TcpProxy, cli_process, free_port, serving
from tests.support.wait import wait_for
from tests.support.worker import Tracked, tracked_worker

from celery_flow.events import encode
from celery_flow.server import create_app
from celery_flow.server.extension import CeleryFlowExtension
from celery_flow.transport import from_url

pytestmark = pytest.mark.slow


@pytest.fixture
def tracked(redis_url: str) -> Iterator[Tracked]:
    with tracked_worker(redis_url, redis_url, pool="threads") as t:
        yield t


async def collect(
    url: str,
    until: Callable[[list[dict[str, Any]]], bool],
    send: list[dict[str, Any]] | None = None,
    start: Callable[[], object] | None = None,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Frames received on `url` until `until(frames)` holds; `start` runs once the socket is open."""
    frames: list[dict[str, Any]] = []
    async with websockets.connect(url, open_timeout=10) as ws:
        frames.append(json.loads(await ws.recv()))  # hello
        for frame in send or []:
            await ws.send(json.dumps(frame))
        if start is not None:
            await asyncio.to_thread(start)
        deadline = time.monotonic() + timeout
        while not until(frames):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching frame in {timeout}s: {frames[-5:]}"
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), remaining)))
    return frames


def states_of(frames: list[dict[str, Any]], task_id: str) -> list[str]:
    return [i["state"] for f in frames if f["type"] == "tasks" for i in f["items"] if i["task_id"] == task_id]


def finished(task_id: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda frames: "SUCCESS" in states_of(frames, task_id)


def test_a_client_sees_a_task_change_state_without_polling(
    tracked: Tracked, redis_url: str, tmp_path: Path
) -> None:
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=tracked.prefix)
    task_id = uuid.uuid4().hex
    with serving(app) as url:
        ws = url.replace("http://", "ws://") + f"/api/live?root_id={task_id}"
        frames = asyncio.run(
            collect(
                ws, finished(task_id), start=lambda: tracked.task("slow").apply_async((0.5,), task_id=task_id)
            )
        )
    assert frames[0] == {"type": "hello", "status": "ok"}
    states = states_of(frames, task_id)
    assert "STARTED" in states  # pushed while it ran, before it finished
    assert states.index("STARTED") < states.index("SUCCESS")
    (last,) = [i for f in frames if f["type"] == "tasks" for i in f["items"] if i["state"] == "SUCCESS"]
    assert last["name"] == "t.slow"
    assert last["runtime"] >= 0.5


def test_a_filter_frame_limits_pushes_to_one_flow(tracked: Tracked, redis_url: str, tmp_path: Path) -> None:
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=tracked.prefix)
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex

    def start() -> None:
        tracked.task("add").apply_async((1, 1), task_id=other).get(timeout=10)
        tracked.task("add").apply_async((2, 2), task_id=mine)

    with serving(app) as url:
        frames = asyncio.run(
            collect(
                url.replace("http://", "ws://") + "/api/live",
                finished(mine),
                send=[{"type": "filter", "root_id": mine}],
                start=start,
            )
        )
    seen = {i["task_id"] for f in frames if f["type"] == "tasks" for i in f["items"]}
    assert seen == {mine}


def test_every_server_process_on_one_store_pushes(tracked: Tracked, redis_url: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    app = create_app(broker_url=redis_url, store=store, prefix=tracked.prefix)  # folds the events
    port = free_port()
    task_id = uuid.uuid4().hex
    # a second process that consumes nothing: it learns about changes from the store alone
    with (
        serving(app) as url_a,
        cli_process("server", "--no-consumer", "--store", store, "--port", str(port), log=tmp_path / "b.log"),
    ):
        url_b = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url_b + "/api/health").status_code == 200, 30, "second server")

        async def both() -> list[list[dict[str, Any]]]:
            urls = [u.replace("http://", "ws://") + f"/api/live?root_id={task_id}" for u in (url_a, url_b)]
            clients = [asyncio.create_task(collect(u, finished(task_id))) for u in urls]
            await asyncio.sleep(0)  # both connect first, then the task runs
            await asyncio.to_thread(lambda: tracked.task("add").apply_async((3, 4), task_id=task_id))
            return list(await asyncio.gather(*clients))

        results = asyncio.run(both())
    for frames in results:
        assert "SUCCESS" in states_of(frames, task_id)


def test_status_frames_report_a_broker_outage_and_recovery(redis_db: int, tmp_path: Path) -> None:
    proxy = TcpProxy(("127.0.0.1", 6379)).start()
    app = create_app(
        broker_url=f"redis://127.0.0.1:{proxy.port}/{redis_db}", store=f"sqlite:///{tmp_path / 'f.db'}"
    )
    try:
        with serving(app) as url:
            ws = url.replace("http://", "ws://") + "/api/live"

            def statuses(frames: list[dict[str, Any]]) -> list[str]:
                return [f["status"] for f in frames if f["type"] == "status"]

            def outage_then_back(frames: list[dict[str, Any]]) -> bool:
                seen = statuses(frames)
                if seen == ["degraded"]:
                    proxy.start()
                return "degraded" in seen and seen[-1] == "ok"

            frames = asyncio.run(collect(ws, outage_then_back, start=proxy.stop, timeout=40))
    finally:
        proxy.stop()
    degraded = next(f for f in frames if f["type"] == "status" and f["status"] == "degraded")
    assert "broker unreachable" in degraded["detail"]


def test_the_embedded_consumers_commit_is_pushed_without_waiting_for_the_poll_timer(
    redis_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    """The in-process consumer wakes the live poller after each commit: with a poll timer of a minute,
    a change still reaches the browser at once (a 20 s deadline, well inside the minute)."""
    ext = CeleryFlowExtension(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'w.db'}",
                              prefix=unique_prefix, live_interval=60.0)  # fmt: skip
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router)
    transport = from_url(redis_url, prefix=unique_prefix)
    task_id = uuid.uuid4().hex

    def run_task() -> None:
        # The poller's first pass ran at startup, before the socket opened: only a wake-up pushes this.
        sent = event("sent", task_id, name="t.x", root_id=task_id)
        transport.publish([encode(sent), encode(event("succeeded", task_id, name="t.x", runtime=0.1))])

    try:
        with serving(app) as url:
            ws = url.replace("http://", "ws://") + "/api/live"
            frames = asyncio.run(collect(ws, finished(task_id), start=run_task, timeout=20))
    finally:
        transport.close()
    assert "SUCCESS" in states_of(frames, task_id)
