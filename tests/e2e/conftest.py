"""Browser tests: Debian's Chromium (Playwright) against the real server, fed by a real Celery worker.

One stack per module: a Celery app instrumented with `celery_flow.init` publishing to Redis Streams, a
`start_worker` worker (threads), and `create_app(...)` with its embedded consumer on a temporary SQLite
store, served by uvicorn on a free port. The built UI is required: if it is missing or older than the
frontend sources, the session builds it (`npm ci` when needed, then `npm run build`) or fails saying why.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, Playwright, sync_playwright
from tests.support.canvas_app import make_app
from tests.support.server_helpers import REPO, ServerThread
from tests.support.wait import wait_for

FRONTEND = REPO / "frontend"
STATIC_INDEX = REPO / "src" / "celery_flow" / "web" / "static" / "index.html"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _newest_source() -> float:
    paths = [FRONTEND / "index.html", FRONTEND / "package.json", FRONTEND / "vite.config.ts"]
    paths += [p for p in (FRONTEND / "src").rglob("*") if p.is_file()]
    return max(p.stat().st_mtime for p in paths if p.exists())


@pytest.fixture(scope="session")
def built_ui() -> Path:
    """The built SPA, (re)built from frontend/ when missing or stale; a clear failure when it cannot be."""
    if STATIC_INDEX.exists() and STATIC_INDEX.stat().st_mtime >= _newest_source():
        return STATIC_INDEX
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"the UI is not built ({STATIC_INDEX} missing or stale) and npm is not on PATH: "
            "install Node 20+ and run `make ui`"
        )
    steps = [] if (FRONTEND / "node_modules").is_dir() else [[npm, "ci", "--no-audit", "--no-fund"]]
    steps.append([npm, "run", "build"])
    for cmd in steps:
        proc = subprocess.run(cmd, cwd=FRONTEND, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            pytest.fail(
                f"building the UI failed: `{' '.join(cmd[1:])}` in frontend/:\n{proc.stdout}\n{proc.stderr}"
            )
    assert STATIC_INDEX.exists(), f"`npm run build` did not produce {STATIC_INDEX}"
    return STATIC_INDEX


# Module scope, not session: sync Playwright keeps an asyncio loop marked as running in this thread for as
# long as it lives, so every later `asyncio.run()` in the same pytest session (WebSocket tests in
# tests/integration, tests/hostile, tests/unit) would fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    b = playwright_instance.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield b
    b.close()


@dataclass
class PageWatch:
    """What the page did that a user would not want: JS dialogs (XSS), page errors, console errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page_watch() -> PageWatch:
    return PageWatch()


@pytest.fixture
def page(browser: Browser, built_ui: Path, page_watch: PageWatch) -> Iterator[Page]:
    """A fresh browser context (no stored theme, no cache) per test, watching for dialogs and errors."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    context.set_default_timeout(15_000)
    pg = context.new_page()

    def on_dialog(dialog: Dialog) -> None:
        page_watch.dialogs.append(f"{dialog.type}: {dialog.message}")
        with contextlib.suppress(Exception):
            dialog.dismiss()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            page_watch.errors.append(msg.text)

    pg.on("dialog", on_dialog)
    pg.on("console", on_console)
    pg.on("pageerror", lambda exc: page_watch.errors.append(f"pageerror: {exc}"))
    yield pg
    context.close()


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"e2e-{name}.png"
    page.screenshot(path=str(path))
    return path


@dataclass
class Stack:
    """The running system under test."""

    url: str
    app: Celery
    prefix: str
    store_url: str
    http: httpx.Client

    def task(self, name: str) -> Any:
        return self.app.tasks[name]

    def api(self, path: str, **params: Any) -> Any:
        res = self.http.get(f"/api{path}", params=params)
        res.raise_for_status()
        return res.json()

    def wait_task(self, task_id: str, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the API until the server has stored the task in one of `states`."""

        def check() -> dict[str, Any] | None:
            res = self.http.get(f"/api/tasks/{task_id}")
            if res.status_code == 200 and res.json()["state"] in states:
                return dict(res.json())
            return None

        return wait_for(check, timeout, f"task {task_id} to reach {states}")


@pytest.fixture(scope="module")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory, built_ui: Path) -> Iterator[Stack]:
    from celery_flow.server import create_app

    run = uuid.uuid4().hex[:8]
    prefix = f"cf_e2e_{run}"
    store_url = f"sqlite:///{tmp_path_factory.mktemp('e2e')}/flow.db"
    app = make_app(redis_url, redis_url, flow_transport_url=redis_url, prefix=prefix, main=f"e2e_{run}")
    app.conf.update(task_default_queue=f"e2e_{run}", worker_prefetch_multiplier=1)
    server = ServerThread(create_app(broker_url=redis_url, store=store_url, prefix=prefix))
    try:
        server.start()
        with (
            start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=15),
            httpx.Client(base_url=server.url, timeout=10) as http,
        ):
            yield Stack(url=server.url, app=app, prefix=prefix, store_url=store_url, http=http)
    finally:
        import celery_flow

        with contextlib.suppress(Exception):
            celery_flow.shutdown(app)
        server.stop()
