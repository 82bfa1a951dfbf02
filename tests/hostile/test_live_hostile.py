"""Hostile WebSocket clients on /api/live cannot hurt the server or the other clients.

Three clients at once on the real server (uvicorn) while tasks are being stored:

- a well-behaved client, which must receive every change;
- a client sending garbage: binary frames, non-JSON, JSON of every wrong shape, a filter with non-string
  ids, 200,000 nested brackets;
- a client that never reads: the server must disconnect it (counted in /metrics) rather than buffer
  without bound or slow the others down.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from pathlib import Path

import httpx
import websockets
from fastapi import FastAPI

from celery_flow.events import Event
from celery_flow.server import CeleryFlowExtension
from celery_flow.store import open_store
from tests.support.events import event
from tests.support.server_helpers import serving

GARBAGE: list[str | bytes] = [
    b"\xff\xfe\x00binary",
    "not json at all",
    "[1, 2, 3]",
    "null",
    '"filter"',
    '{"type": "filter", "root_id": 123, "trace_id": ["a"]}',
    '{"type": "filter", "root_id": {"$ne": null}}',
    '{"type": "' + "f" * 100_000 + '"}',
    "[" * 200_000,
    '{"type": "filter", "root_id": ""}',
]


def _tasks(count: int, tag: str) -> list[Event]:
    out = []
    for i in range(count):
        task_id = f"{tag}-{i}-{uuid.uuid4().hex[:6]}"
        for dt, type_ in ((0.0, "sent"), (0.01, "started")):
            out.append(event(type_, task_id, 1_700_000_000.0 + i + dt, name="app.live", hostname="celery@h"))
        # A long exception message makes every live frame big: socket buffers fill within a few batches.
        out.append(
            event("failed", task_id, 1_700_000_000.0 + i + 0.02, name="app.live", exception="E" * 20_000)
        )
    return out


def _stalled_client(base: str) -> socket.socket:
    """A raw TCP client that completes the WebSocket handshake and then never reads a byte (a frozen
    browser tab, a dead NAT): only TCP backpressure tells the server, so its receive buffer is tiny."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /api/live HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def test_garbage_and_stalled_clients_do_not_disturb_the_others(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    ext = CeleryFlowExtension(broker_url=None, store=url, live_interval=0.05, live_queue_size=4)
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router)
    writer = open_store(url)
    with serving(app) as base:
        ws_url = base.replace("http://", "ws://") + "/api/live"

        async def scenario() -> tuple[set[str], set[str]]:
            expected: set[str] = set()
            seen: set[str] = set()
            async with (
                websockets.connect(ws_url, max_size=None) as good,
                websockets.connect(ws_url, max_size=None) as rogue,
            ):
                for ws in (good, rogue):
                    assert json.loads(await ws.recv())["type"] == "hello"
                for frame in GARBAGE:
                    try:
                        await rogue.send(frame)
                    except websockets.ConnectionClosed:
                        break  # refusing a binary frame by closing is fine too
                done = asyncio.Event()

                async def read_good() -> None:
                    while not done.is_set() or not expected <= seen:
                        try:
                            frame = json.loads(await asyncio.wait_for(good.recv(), 10))
                        except TimeoutError:
                            return
                        if frame["type"] == "tasks":
                            seen.update(item["task_id"] for item in frame["items"])

                reader = asyncio.create_task(read_good())
                for batch in range(25):  # the stalled client never reads any of this
                    events = _tasks(150, f"b{batch}")
                    await asyncio.to_thread(writer.apply, events)
                    expected.update(e.task_id for e in events if e.task_id)
                    await asyncio.sleep(0.02)
                done.set()
                await reader
            return expected, seen

        stalled = _stalled_client(base)
        try:
            expected, seen = asyncio.run(scenario())
        finally:
            stalled.close()
        assert expected <= seen, f"the well-behaved client missed {len(expected - seen)} tasks"
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.get("/api/health").json()["status"] == "ok"
            metrics = client.get("/metrics").text
        slow = [
            line
            for line in metrics.splitlines()
            if line.startswith("celery_flow_live_slow_disconnects_total")
        ]
        assert slow, metrics
        assert float(slow[0].split()[-1]) >= 1, "the client that never read was not disconnected"
    writer.close()
