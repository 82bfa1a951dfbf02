"""The `/api/live` WebSocket hub: one store poller per process, fanned out to bounded per-client queues.

Why poll the store instead of hooking the consumer: the store is the one thing every server process
shares, so each process tailing `store.changes_since()` pushes every committed change, whichever process
(embedded consumer, a separate `celery-flow consume`, another host on PostgreSQL) wrote it. Pushes also
never run ahead of what a follow-up REST call can read. The poll runs every `interval` and, when this
process runs its own consumer, also right after each of its commits (`wake()`, a consumer sink), so a
change waits for no timer; polls stay at least `min_gap` apart however often the consumer commits.

Each client owns a bounded queue drained by its own sender; the poller only ever `put_nowait`s, so a
slow client whose queue fills up is disconnected (close code 1013) and never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from celery_flow.flow.model import CollapsedGroup, TaskSummary
from celery_flow.store.base import Store

log = logging.getLogger("celery_flow.server.live")

_PUSHED_STATES = frozenset({"FAILURE", "LOST", "REJECTED", "REVOKED", "RETRY"})
# Collapsed groups one client may name in its filter.
MAX_COLLAPSED = 100
SLOW_CLIENT_CLOSE = 1013  # "try again later": the client did not keep up with the push rate
_encoder = msgspec.json.Encoder()


@dataclass
class LiveFilter:
    root_id: str | None = None
    trace_id: str | None = None
    # Groups of `root_id` the client draws collapsed (GET /api/flows/{root_id} `collapsed`): their
    # members' changes come as one `group` frame with the group's current figures, not member by member.
    collapsed: frozenset[str] = frozenset()

    def matches(self, item: dict[str, Any]) -> bool:
        if self.root_id is not None and self.root_id not in (item.get("root_id"), item.get("task_id")):
            return False
        return self.trace_id is None or item.get("trace_id") == self.trace_id


@dataclass(eq=False)
class LiveClient:
    websocket: WebSocket
    queue: asyncio.Queue[bytes | None]
    filter: LiveFilter = field(default_factory=LiveFilter)
    dropped: bool = False


def _worth(item: Mapping[str, Any]) -> bool:
    """A member pushed on its own even when its group is collapsed: one that failed or is retrying (the
    running ones the graph lists follow with its next refetch, not one push each)."""
    return item.get("state") in _PUSHED_STATES


def _status_frame(status: str, detail: str | None) -> bytes:
    return _encoder.encode({"type": "status", "status": status, "detail": detail})


class LiveHub:
    """Owns the poller task and the connected clients of one server process."""

    def __init__(
        self,
        store: Callable[[], Store],
        status: Callable[[], Awaitable[tuple[str, str | None]]],
        interval: float = 0.25,
        batch: int = 500,
        min_gap: float = 0.02,
        queue_size: int = 256,
        status_every: float = 2.0,
    ) -> None:
        self._store = store
        self._status = status
        self.interval = interval
        self.batch = batch
        self.min_gap = min_gap
        self.queue_size = queue_size
        self.status_every = status_every
        self.clients: set[LiveClient] = set()
        self.cursor: int | None = None
        self.current_status: tuple[str, str | None] = ("ok", None)
        self.pushed = 0
        self.slow_disconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._wake_pending = False

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="celery-flow-live-poller")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._loop = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in list(self.clients):
            client.queue.put_nowait(None)

    # ---- the poller ----------------------------------------------------------------------------

    def wake(self, changed: Sequence[str] = ()) -> None:
        """Poll now rather than at the next tick (any thread: the in-process consumer after a commit)."""
        loop = self._loop
        if loop is None or self._wake_pending:
            return
        self._wake_pending = True  # one scheduled wake-up covers every commit until the poll runs
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to wake
            loop.call_soon_threadsafe(self._wakeup.set)

    async def _sleep(self, since: float) -> None:
        """Until the next tick or a wake-up, and at least `min_gap` after the poll that began at `since`."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), max(0.0, since + self.interval - loop.time()))
        rest = since + self.min_gap - loop.time()
        if rest > 0:
            await asyncio.sleep(rest)
        # Cleared before polling: a commit from now on wakes the next poll.
        self._wakeup.clear()
        self._wake_pending = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_status = 0.0
        while True:
            began = loop.time()
            try:
                if loop.time() >= next_status:
                    next_status = loop.time() + self.status_every
                    await self._refresh_status()
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one bad poll end live updates for everyone
                log.warning("live poll failed: %s", exc)
                self._set_status("degraded", f"store unreachable: {exc}")
            await self._sleep(began)

    async def _refresh_status(self) -> None:
        status, detail = await self._status()
        self._set_status(status, detail)

    def _set_status(self, status: str, detail: str | None) -> None:
        if (status, detail) != self.current_status:
            self.current_status = (status, detail)
            frame = _status_frame(status, detail)
            for client in list(self.clients):
                self._offer(client, frame)

    async def _poll_once(self) -> None:
        store = self._store()
        if self.cursor is None:
            self.cursor = await anyio.to_thread.run_sync(store.head_cursor)
        while True:
            items, cursor = await anyio.to_thread.run_sync(store.changes_since, self.cursor, self.batch)
            self.cursor = cursor
            if items:
                groups = await self._collapsed_groups(store, items)
                self.publish(items, groups)
            if len(items) < self.batch:
                return

    async def _collapsed_groups(
        self, store: Store, items: list[TaskSummary]
    ) -> dict[tuple[str, str], CollapsedGroup]:
        """The current figures of the collapsed groups some client draws that these changes touch: one
        read per flow and poll, however many members changed and clients watch."""
        wanted: dict[str, set[str]] = {}
        for client in self.clients:
            flt = client.filter
            if flt.root_id is not None and flt.collapsed:
                touched = {
                    i.group_id for i in items if i.group_id in flt.collapsed and i.root_id == flt.root_id
                }
                if touched:
                    wanted.setdefault(flt.root_id, set()).update(g for g in touched if g)
        out: dict[tuple[str, str], CollapsedGroup] = {}
        for root_id, group_ids in wanted.items():
            found = await anyio.to_thread.run_sync(store.group_counts, root_id, sorted(group_ids))
            out.update({(root_id, group_id): group for group_id, group in found.items()})
        return out

    def publish(
        self, items: list[TaskSummary], groups: Mapping[tuple[str, str], CollapsedGroup] | None = None
    ) -> None:
        """Queue the changed tasks for every client whose filter matches some of them; a member of a
        group the client draws collapsed goes out only in its group's figures (`groups`), unless it is
        one the graph lists (failed, lost, retried, running)."""
        if not self.clients:
            return
        plain: list[dict[str, Any]] = msgspec.to_builtins(items)
        everything: bytes | None = None
        for client in list(self.clients):
            flt = client.filter
            if flt.root_id is None and flt.trace_id is None:
                if everything is None:
                    everything = _encoder.encode({"type": "tasks", "items": plain})
                self._offer(client, everything)
                continue
            mine = [item for item in plain if flt.matches(item)]
            touched: set[str] = set()
            if flt.collapsed:
                touched = {str(i.get("group_id")) for i in mine} & flt.collapsed
                mine = [i for i in mine if i.get("group_id") not in flt.collapsed or _worth(i)]
            if mine:
                self._offer(client, _encoder.encode({"type": "tasks", "items": mine}))
            # After the members pushed on their own, so the group's figures are never older than them.
            for group_id in sorted(touched):
                group = (groups or {}).get((flt.root_id or "", group_id))
                if group is not None:
                    frame = {"type": "group", "root_id": flt.root_id, "group": group}
                    self._offer(client, _encoder.encode(frame))

    def _offer(self, client: LiveClient, frame: bytes) -> None:
        if client.dropped:
            return
        try:
            client.queue.put_nowait(frame)
            self.pushed += 1
        except asyncio.QueueFull:
            # Too slow: disconnect it rather than buffer without bound or block everyone else.
            client.dropped = True
            self.slow_disconnects += 1
            self.clients.discard(client)
            log.info("live client dropped: queue of %d frames full", self.queue_size)
            while not client.queue.empty():
                client.queue.get_nowait()
            client.queue.put_nowait(None)

    # ---- one connection ------------------------------------------------------------------------

    async def serve(self, websocket: WebSocket, initial: LiveFilter) -> None:
        """Run one accepted-or-not client connection until either side closes."""
        await websocket.accept()
        client = LiveClient(websocket, asyncio.Queue(maxsize=self.queue_size), initial)
        status, _detail = self.current_status
        await websocket.send_text(_encoder.encode({"type": "hello", "status": status}).decode())
        if self.current_status[1] is not None:
            await websocket.send_text(_status_frame(*self.current_status).decode())
        self.clients.add(client)
        sender = asyncio.create_task(self._send_loop(client))
        try:
            await self._receive_loop(client)
        finally:
            self.clients.discard(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
            if websocket.application_state == WebSocketState.CONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close(SLOW_CLIENT_CLOSE if client.dropped else 1000)

    async def _send_loop(self, client: LiveClient) -> None:
        while True:
            frame = await client.queue.get()
            if frame is None:
                break
            await client.websocket.send_text(frame.decode())
        # The poller gave up on this client (slow or shutting down): closing ends its receive loop.
        with contextlib.suppress(Exception):
            await client.websocket.close(SLOW_CLIENT_CLOSE if client.dropped else 1001)

    async def _receive_loop(self, client: LiveClient) -> None:
        while True:
            try:
                text = await client.websocket.receive_text()
            except (WebSocketDisconnect, RuntimeError, KeyError):
                return
            try:
                message = msgspec.json.decode(text)
            except msgspec.DecodeError:
                continue
            if isinstance(message, dict) and message.get("type") == "filter":
                root_id, trace_id = message.get("root_id"), message.get("trace_id")
                collapsed = message.get("collapsed")
                client.filter = LiveFilter(
                    root_id=root_id if isinstance(root_id, str) and root_id else None,
                    trace_id=trace_id if isinstance(trace_id, str) and trace_id else None,
                    collapsed=frozenset(
                        g
                        for g in (collapsed if isinstance(collapsed, list) else [])[:MAX_COLLAPSED]
                        if isinstance(g, str) and 0 < len(g) <= 255
                    ),
                )
