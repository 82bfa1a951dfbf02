"""With basic auth on, an unauthenticated client gets nothing from any route: every one the app has.

tests/integration/test_auth.py checks a hand-written list of paths. This walks the app's own router
(so a route added tomorrow is covered without editing the test), fills every path parameter with the
id of a task that really is in the store (a leak would show real data), adds every UI deep link and every
built static asset, and tries every HTTP method plus the WebSocket handshake, over real HTTP (uvicorn).
Authenticated, each GET answers 200 (`/mcp` 405: it takes POST, checked too): the walk reached real handlers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi.routing import APIRoute, APIWebSocketRoute

from celery_flow.server import create_app
from celery_flow.store import open_store
from celery_flow.web import static_dir
from tests.support.events import event
from tests.support.server_helpers import serving

USER, PASSWORD = "ops", "pa:ss word"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
SPA_PATHS = ["flows", "flows/{root}", "tasks", "tasks/{task}", "traces/{trace}", "registry",
             "registry/app.secret", "failures", "workers", "schedules", "index.html", "favicon.ico",
             "no/such/page", "api", "api/nope"]  # fmt: skip


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _walk(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        nested = getattr(route, "original_router", None) or getattr(route, "router", None)
        if nested is not None and hasattr(nested, "routes"):
            yield from _walk(list(nested.routes))
        else:
            yield route


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], list[Any]]]:
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    ids = {"task": uuid.uuid4().hex, "trace": uuid.uuid4().hex, "group": uuid.uuid4().hex}
    ids["root"] = ids["task"]
    store = open_store(url)
    secret: dict[str, Any] = {"name": "app.secret", "trace_id": ids["trace"], "group_id": ids["group"],
                              "hostname": "celery@h", "args": ["SECRET-A"], "result": "SECRET-R"}  # fmt: skip
    events = [
        event(t, ids["task"], 1_700_000_000.0 + i, **secret)
        for i, t in enumerate(("sent", "received", "started", "succeeded"))
    ]
    events.append(event("worker.online", ts=1_700_000_000.0, hostname="celery@h"))
    store.apply(events)
    assert store.index_search().lag == 0  # searchable (store/search.py indexes behind the fold)
    store.close()
    app = create_app(broker_url=None, store=url, basic_auth=(USER, PASSWORD), embedded_consumer=False)
    routes = list(_walk(list(app.routes)))
    with serving(app, auth=(USER, PASSWORD)) as base:
        yield base, ids, routes


def _concrete_paths(routes: list[Any], ids: dict[str, str]) -> list[str]:
    fill = {
        "task_id": ids["task"],
        "root_id": ids["root"],
        "trace_id": ids["trace"],
        "group_id": ids["group"],
        "name:path": "app.secret",
    }
    paths: list[str] = []
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        if "{path:path}" in route.path:
            spa = [p.format(**ids) for p in SPA_PATHS]
            assets = static_dir() / "assets"
            if assets.is_dir():
                spa += [f"assets/{f.name}" for f in sorted(assets.iterdir())]
            paths += [route.path.replace("{path:path}", p) for p in spa]
            continue
        path = route.path
        for name, value in fill.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, f"a path parameter this test does not know how to fill: {route.path}"
        paths.append(path)
    return paths


def test_every_route_and_method_refuses_an_unauthenticated_client(
    secured: tuple[str, dict[str, str], list[Any]],
) -> None:
    base, ids, routes = secured
    paths = _concrete_paths(routes, ids)
    assert {"/api/health", "/api/tasks", "/metrics", "/api/openapi.json", "/api/docs", "/mcp"} <= set(paths)
    refusals = [
        {},
        _basic(USER, "wrong"),
        _basic(USER.upper(), PASSWORD),
        _basic(USER, PASSWORD + " "),
        {"Authorization": "Basic"},
        {"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()},  # no colon at all
        {"Authorization": "Bearer " + PASSWORD},
        {"Authorization": "Digest username=ops"},
    ]
    with httpx.Client(base_url=base, timeout=10) as client:
        for path in paths:
            for headers in refusals:
                for method in METHODS:
                    response = client.request(method, path, headers=headers)
                    body = response.text
                    where = f"{method} {path} with {headers}"
                    assert ids["task"] not in body, where
                    assert "SECRET" not in body, where
                    if method == "GET":
                        assert response.status_code == 401, (where, response.status_code, body[:200])
                        assert response.headers["www-authenticate"].startswith("Basic"), where
                    else:
                        # A method no route has (HEAD included: FastAPI GET routes do not answer HEAD)
                        # is refused before any handler runs: no data either way.
                        assert response.status_code in (401, 405), (where, response.status_code)
            allowed = client.get(path, headers=_basic(USER, PASSWORD))
            expect_404 = path.endswith(("/nope", "/api"))
            # `/mcp` takes MCP messages by POST (below); it keeps no stream open for a GET.
            expected = 404 if expect_404 else 405 if path == "/mcp" else 200
            assert allowed.status_code == expected, (path, allowed.status_code)
        assert ids["task"] in client.get("/api/tasks", headers=_basic(USER, PASSWORD)).text
        # The MCP endpoint's one method, with and without credentials.
        search = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                  "params": {"name": "search_tasks", "arguments": {"q": "SECRET-A"}}}  # fmt: skip
        accept = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
        for headers in refusals:
            refused = client.post("/mcp", json=search, headers={**accept, **headers})
            assert refused.status_code == 401, (headers, refused.status_code)
            assert ids["task"] not in refused.text
        found = client.post("/mcp", json=search, headers={**accept, **_basic(USER, PASSWORD)})
        assert found.status_code == 200
        assert ids["task"] in found.text


def test_every_websocket_route_refuses_an_unauthenticated_handshake(
    secured: tuple[str, dict[str, str], list[Any]],
) -> None:
    base, ids, routes = secured
    sockets = [r.path for r in routes if isinstance(r, APIWebSocketRoute)]
    assert "/api/live" in sockets

    async def hello(url: str, headers: dict[str, str]) -> dict[str, Any]:
        async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
            return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))

    for path in sockets:
        url = base.replace("http://", "ws://") + path
        for headers in ({}, _basic(USER, "wrong"), {"Authorization": "Bearer x"}):
            with pytest.raises(websockets.InvalidStatus) as refused:
                asyncio.run(hello(url + f"?root_id={ids['root']}", headers))
            assert refused.value.response.status_code == 401, (path, headers)
        # Credentials in the URL are not a way around it either (browsers drop them; we ignore them).
        with pytest.raises(websockets.InvalidStatus):
            asyncio.run(hello(url.replace("ws://", f"ws://{USER}:wrong@"), {}))
        assert asyncio.run(hello(url, _basic(USER, PASSWORD)))["type"] == "hello"
