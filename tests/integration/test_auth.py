"""Basic auth guards every route, the WebSocket handshake included: standalone, via the CLI, and mounted."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
import websockets
from fastapi import FastAPI
from tests.support.server_helpers import cli_env, cli_process, free_port, serving, wait_for

from celery_flow.server import CeleryFlowExtension, create_app, require_basic_auth

pytestmark = pytest.mark.slow

USER, PASSWORD = "admin", "s3cr:et"  # a password may contain ':'
GUARDED = [
    "/api/health",
    "/api/tasks",
    "/api/flows",
    "/api/registry",
    "/api/workers",
    "/api/openapi.json",
    "/api/docs",
    "/metrics",
    "/",
    "/flows/abc",
    "/tasks/abc",
    "/registry",
    "/api/tasks/nope",
]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def ws_hello(url: str, headers: dict[str, str]) -> dict[str, object]:
    async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
        return dict(json.loads(await asyncio.wait_for(ws.recv(), 10)))


def ws_status(url: str, headers: dict[str, str]) -> int:
    """The HTTP status a handshake was refused with."""
    with pytest.raises(websockets.InvalidStatus) as info:
        asyncio.run(ws_hello(url, headers))
    return info.value.response.status_code


def assert_guarded(base: str, mount: str = "") -> None:
    with httpx.Client(base_url=base, timeout=10) as client:
        for path in GUARDED:
            anonymous = client.get(mount + path)
            assert anonymous.status_code == 401, path
            assert anonymous.headers["www-authenticate"].startswith('Basic realm="celery-flow"')
            assert client.get(mount + path, headers=basic(USER, "wrong")).status_code == 401, path
            assert client.get(mount + path, headers=basic("root", PASSWORD)).status_code == 401, path
            assert client.get(mount + path, headers={"Authorization": "Basic !!notbase64"}).status_code == 401
            assert client.get(mount + path, headers={"Authorization": "Bearer x"}).status_code == 401
            allowed = client.get(mount + path, headers=basic(USER, PASSWORD))
            assert allowed.status_code == (404 if path.endswith("/nope") else 200), (path, allowed.text)
    ws = base.replace("http://", "ws://") + mount + "/api/live"
    assert ws_status(ws, {}) == 401
    assert ws_status(ws, basic(USER, "wrong")) == 401
    hello = asyncio.run(ws_hello(ws, basic(USER, PASSWORD)))
    assert hello["type"] == "hello"


def test_standalone_app_guards_rest_ui_metrics_and_websocket(redis_url: str, tmp_path: Path) -> None:
    app = create_app(
        broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", basic_auth=(USER, PASSWORD)
    )
    with serving(app, auth=(USER, PASSWORD)) as url:
        assert_guarded(url)


def test_mounted_extension_guards_only_its_own_routes(redis_url: str, tmp_path: Path) -> None:
    flow = CeleryFlowExtension(
        broker_url=redis_url,
        store=f"sqlite:///{tmp_path / 'f.db'}",
        auth_dependency=require_basic_auth(USER, PASSWORD),
    )
    app = FastAPI(lifespan=flow.lifespan)

    @app.get("/")
    def home() -> dict[str, str]:
        return {"app": "mine"}

    app.include_router(flow.router, prefix="/ops/flow")
    with serving(app, "/ops/flow/api/health", auth=(USER, PASSWORD)) as url:
        assert_guarded(url, "/ops/flow")
        assert httpx.get(url + "/").json() == {"app": "mine"}  # the user's own routes are untouched


def test_cli_basic_auth_from_the_environment(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(CELERY_FLOW_BASIC_AUTH=f"{USER}:{PASSWORD}")
    args = (
        "server",
        "--broker-url",
        redis_url,
        "--store",
        f"sqlite:///{tmp_path / 'f.db'}",
        "--port",
        str(port),
    )
    with cli_process(*args, env=env, log=tmp_path / "server.log"):
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(url + "/api/health", auth=(USER, PASSWORD)).status_code == 200, 30, "server"
        )
        assert_guarded(url)
        assert "basic auth on" in (tmp_path / "server.log").read_text()
