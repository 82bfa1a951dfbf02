"""Auth guards every route, the WebSocket handshake included: the bundled basic auth standalone, via the
CLI and mounted, and the dependencies users write themselves, in each form a FastAPI app passes them."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import websockets
from fastapi import Depends, FastAPI, Header, HTTPException, Request, WebSocket, status
from fastapi.responses import HTMLResponse
from tests.support.server_helpers import cli_env, cli_process, free_port, serving
from tests.support.wait import wait_for

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


# ---- dependencies the way FastAPI apps write them: typed on Request, raising HTTPException ----------

ADMIN_TOKEN = "adm1n-t0ken"


def require_admin(request: Request) -> None:
    """An app's own check: its session cookie or an admin header, read off the Request."""
    given = {request.cookies.get("session"), request.headers.get("x-admin-token")}
    if ADMIN_TOKEN not in given:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admins only")


@dataclass
class Settings:
    admin_token: str


def get_settings() -> Settings:
    return Settings(admin_token=ADMIN_TOKEN)


async def require_admin_async(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    x_admin_token: Annotated[str | None, Header()] = None,
) -> None:
    """Async, with sub-dependencies: the token from a header or the `token` query parameter."""
    if settings.admin_token not in (x_admin_token, request.query_params.get("token")):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token required")


# auth_dependency, the headers and query string an authorised client sends, the status others get.
FORMS: dict[str, tuple[Any, dict[str, str], str, int]] = {
    "require_basic_auth": (require_basic_auth(USER, PASSWORD), basic(USER, PASSWORD), "", 401),
    "Depends(require_admin)": (Depends(require_admin), {"Cookie": f"session={ADMIN_TOKEN}"}, "", 403),
    "bare require_admin": (require_admin, {"X-Admin-Token": ADMIN_TOKEN}, "", 403),
    "list, async, sub-deps": ([Depends(require_admin_async)], {}, f"?token={ADMIN_TOKEN}", 401),
}


def mounted(auth: Any, tmp_path: Path) -> FastAPI:
    """A user's own app with celery-flow mounted under /ops/flow behind `auth`; its `/` is open."""
    flow = CeleryFlowExtension(
        store=f"sqlite:///{tmp_path / 'f.db'}", embedded_consumer=False, auth_dependency=auth
    )
    app = FastAPI(lifespan=flow.lifespan)

    @app.get("/")
    def home() -> dict[str, str]:
        return {"app": "mine"}

    app.include_router(flow.router, prefix="/ops/flow")
    return app


@pytest.mark.parametrize(("auth", "headers", "query", "refused"), FORMS.values(), ids=list(FORMS))
def test_each_auth_dependency_form_guards_rest_ui_and_the_live_websocket(
    auth: Any, headers: dict[str, str], query: str, refused: int, tmp_path: Path
) -> None:
    with serving(mounted(auth, tmp_path), "/") as base:
        with httpx.Client(base_url=base, timeout=10) as client:
            for path in ("/ops/flow/api/flows", "/ops/flow/"):
                assert client.get(path + query, headers=headers).status_code == 200, path
                assert client.get(path).status_code == refused, path
            assert client.get("/").json() == {"app": "mine"}
        live = base.replace("http://", "ws://") + "/ops/flow/api/live"
        assert asyncio.run(ws_hello(live + query, headers))["type"] == "hello"
        assert ws_status(live, {}) == refused


def crashes(request: Request) -> None:
    raise RuntimeError("the session store is down")


def needs_a_token(token: str) -> None:
    """A required query parameter: without it FastAPI cannot call the dependency (422 on REST)."""


def needs_a_websocket(websocket: WebSocket) -> None:
    """Only a WebSocket route can fill this; on REST it is a TypeError (500)."""


def redirects_to_login(request: Request) -> None:
    raise HTTPException(status.HTTP_307_TEMPORARY_REDIRECT, headers={"Location": "/login"})


@pytest.mark.parametrize(
    ("dependency", "rest_status"),
    [(crashes, 500), (needs_a_token, 422), (needs_a_websocket, 500), (redirects_to_login, 307)],
    ids=["raises", "unresolvable parameter", "websocket-only parameter", "redirect"],
)
def test_a_dependency_that_fails_any_other_way_refuses_the_websocket_with_403(
    dependency: Any, rest_status: int, tmp_path: Path
) -> None:
    with serving(mounted(dependency, tmp_path), "/") as base:
        rest = httpx.get(base + "/ops/flow/api/flows", follow_redirects=False, timeout=10)
        assert rest.status_code == rest_status
        assert ws_status(base.replace("http://", "ws://") + "/ops/flow/api/live", {}) == 403


def test_an_app_answering_refusals_with_a_login_page_still_refuses_the_websocket(tmp_path: Path) -> None:
    app = mounted(require_admin, tmp_path)

    @app.exception_handler(HTTPException)
    async def login_page(request: Request, exc: HTTPException) -> HTMLResponse:
        return HTMLResponse("<form>log in</form>")

    with serving(app, "/") as base:
        rest = httpx.get(base + "/ops/flow/api/flows", timeout=10)
        assert (rest.status_code, rest.text) == (200, "<form>log in</form>")
        assert ws_status(base.replace("http://", "ws://") + "/ops/flow/api/live", {}) == 403


def test_the_apps_dependency_overrides_apply_to_the_websocket_too(tmp_path: Path) -> None:
    def admit_everyone(request: Request) -> None:
        return None

    app = mounted(Depends(require_admin), tmp_path)
    app.dependency_overrides[require_admin] = admit_everyone
    with serving(app, "/") as base:
        assert httpx.get(base + "/ops/flow/api/flows", timeout=10).status_code == 200
        live = base.replace("http://", "ws://") + "/ops/flow/api/live"
        assert asyncio.run(ws_hello(live, {}))["type"] == "hello"


@pytest.mark.parametrize(
    "auth", [Depends(), "admin", [require_admin, None]], ids=["Depends()", "str", "None in a list"]
)
def test_an_auth_dependency_that_is_not_a_callable_is_refused_when_built(auth: Any) -> None:
    with pytest.raises(TypeError, match="auth_dependency"):
        CeleryFlowExtension(store="sqlite://", embedded_consumer=False, auth_dependency=auth)
