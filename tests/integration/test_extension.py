"""CeleryFlowExtension mounted in a user's FastAPI app under a prefix: API, live, UI all move under it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from celery import chain
from fastapi import FastAPI
from tests.support.server_helpers import serving
from tests.support.wait import wait_for
from tests.support.worker import Tracked, tracked_worker

from celery_flow.server import CeleryFlowExtension
from celery_flow.store import open_store
from celery_flow.web import static_dir

pytestmark = pytest.mark.slow


@pytest.fixture
def tracked(redis_url: str) -> Iterator[Tracked]:
    with tracked_worker(redis_url, redis_url) as t:
        yield t


def test_mounted_under_a_prefix_inside_the_users_own_lifespan(
    tracked: Tracked, redis_url: str, tmp_path: Path
) -> None:
    flow = CeleryFlowExtension(
        broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=tracked.prefix
    )
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append("mine")
        async with flow.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/orders/{order_id}")
    def order(order_id: int) -> dict[str, int]:
        return {"order": order_id}

    app.include_router(flow.router, prefix="/internal/flow")
    add = tracked.task("add")
    with serving(app, "/internal/flow/api/health") as base, httpx.Client(base_url=base, timeout=10) as client:
        assert started == ["mine"]
        assert client.get("/orders/7").json() == {"order": 7}
        assert client.get("/api/health").status_code == 404  # nothing leaks to the root

        r = chain(add.s(1, 1), add.s(2)).apply_async()
        assert r.get(timeout=10) == 4
        root = r.parent.id
        graph = wait_for(
            lambda: (
                (g := client.get(f"/internal/flow/api/flows/{root}").json()).get("nodes")
                and all(n["state"] == "SUCCESS" for n in g["nodes"])
                and len(g["nodes"]) == 2
                and g
            ),
            20,
            "the chain folded by the embedded consumer",
        )
        assert [e["kind"] for e in graph["edges"]] == ["chain"]

        spec = client.get("/internal/flow/api/openapi.json").json()
        assert spec["servers"] == [{"url": "/internal/flow"}]
        assert "/api/tasks" in spec["paths"]

        page = client.get(f"/internal/flow/flows/{root}")
        assert page.status_code == 200
        if (static_dir() / "index.html").exists():
            assert '<base href="/internal/flow/">' in page.text
        else:
            assert "make ui" in page.text

        async def hello() -> dict[str, str]:
            ws_url = base.replace("http://", "ws://") + "/internal/flow/api/live"
            async with websockets.connect(ws_url) as ws:
                return dict(json.loads(await ws.recv()))

        assert asyncio.run(hello())["type"] == "hello"
        assert client.get("/internal/flow/metrics").status_code == 200


def test_a_store_object_and_no_embedded_consumer(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    flow = CeleryFlowExtension(store=store, embedded_consumer=False)
    app = FastAPI(lifespan=flow.lifespan)
    app.include_router(flow.router, prefix="/flow")
    try:
        with serving(app, "/flow/api/health") as base:
            health = httpx.get(base + "/flow/api/health").json()
            assert health["status"] == "ok"
            assert health["consumer"]["mode"] == "external"
            assert health["transport"]["reachable"] is None
        store.ping()  # the extension leaves a store it did not open to its owner
    finally:
        store.close()


def test_routes_say_how_to_start_it_when_the_lifespan_was_forgotten(tmp_path: Path) -> None:
    flow = CeleryFlowExtension(store=f"sqlite:///{tmp_path / 'f.db'}")
    app = FastAPI()  # lifespan=flow.lifespan forgotten
    app.include_router(flow.router)
    with serving(app, "/api/health") as base:
        resp = httpx.get(base + "/api/tasks")
        assert resp.status_code == 503
        assert "lifespan=extension.lifespan" in resp.json()["detail"]
        assert httpx.get(base + "/api/health").json()["status"] == "degraded"
