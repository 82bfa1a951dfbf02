"""Markup in every user-controlled field never becomes HTML in the UI (real Chromium, real server).

tests/e2e/test_ui.py shows an XSS payload in a task's args rendered as text. Here the payloads sit in
every other field a worker or producer controls and the UI displays: task names (lists, graph nodes,
timeline, registry), results, exception messages and tracebacks, retry reasons, hostnames (workers view),
queues, kwargs keys, and the search box. Each view is opened by its deep link; the page must show the
payload as text, run none of it (no dialog, no `window.__xss`), and contain no element it injected.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect

from celery_flow.events import Event, ScheduleInfo, ScheduleRun, TaskInfo
from celery_flow.server import create_app
from celery_flow.store import open_store
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, built_ui  # noqa: F401 - a fixture, shared
from tests.support.events import event
from tests.support.server_helpers import ServerThread

PAYLOADS = {
    "name": '<img src=x id="xss-name" onerror="window.__xss=1;alert(1)">',
    "host": "celery@<svg id=xss-host onload=window.__xss=2>",
    "exception": "ValueError('<script id=xss-exc>window.__xss=3</script>')",
    "traceback": 'Traceback:\n  File "<iframe id=xss-tb src=javascript:window.__xss=4>"\nValueError',
    "result": '"><img src=x id=xss-result onerror=window.__xss=5>',
    "queue": "q<b id=xss-queue>bold</b>",
    "reason": "<a id=xss-reason href=javascript:window.__xss=6>retry</a>",
    "key": "<i id=xss-key>k</i>",
    "entry": "nightly <img src=x id=xss-entry onerror=window.__xss=7>",
    "schedule": "<u id=xss-schedule>every 1s</u>",
}
INJECTED = (
    "#xss-name, #xss-host, #xss-exc, #xss-tb, #xss-result, #xss-queue, #xss-reason, #xss-key, #xss-entry, "
    "#xss-schedule"
)


@pytest.fixture(scope="module")
def hostile_ui(tmp_path_factory: pytest.TempPathFactory, built_ui: Path) -> Iterator[dict[str, str]]:  # noqa: F811
    root, child, failed, trace = (uuid.uuid4().hex for _ in range(4))
    t0 = time.time() - 600  # recent: the failures page shows the last 24 hours
    events: list[Event] = []

    def add(type_: str, task_id: str, dt: float, **fields: Any) -> None:
        base: dict[str, Any] = {
            "task_id": task_id,
            "name": PAYLOADS["name"],
            "root_id": root,
            "trace_id": trace,
        }
        if task_id != root:
            base["parent_id"] = root
        events.append(event(type_, ts=t0 + dt, **{**base, **fields}))

    host = {"hostname": PAYLOADS["host"], "pid": 1}
    for task_id, offset in ((root, 0.0), (child, 1.0)):
        add("sent", task_id, offset, queue=PAYLOADS["queue"], args=[PAYLOADS["name"]],
            kwargs={PAYLOADS["key"]: PAYLOADS["result"]})  # fmt: skip
        add("received", task_id, offset + 0.1, **host)
        add("started", task_id, offset + 0.2, **host)
        add("succeeded", task_id, offset + 0.5, result=PAYLOADS["result"], runtime=0.3, **host)
    add("sent", failed, 2.0, queue=PAYLOADS["queue"])
    add("started", failed, 2.1, **host)
    add("retried", failed, 2.2, reason=PAYLOADS["reason"], exception=PAYLOADS["exception"], **host)
    add("started", failed, 3.0, retries=1, **host)
    add("failed", failed, 3.5, retries=1, exception=PAYLOADS["exception"], traceback=PAYLOADS["traceback"],
        runtime=0.5, **host)  # fmt: skip
    events.append(event("worker.online", ts=t0, hostname=PAYLOADS["host"],
                        tasks=[TaskInfo(name=PAYLOADS["name"], doc=PAYLOADS["reason"])]))  # fmt: skip
    # A beat (also named by a payload) whose entry and schedule text are payloads; the root was its run.
    entry = ScheduleInfo(name=PAYLOADS["entry"], task=PAYLOADS["name"], schedule=PAYLOADS["schedule"],
                         interval=1.0, next_at=t0 + 1)  # fmt: skip
    events.append(event("worker.online", ts=t0, hostname=PAYLOADS["host"] + "-beat", schedules=[entry]))
    events[0].schedule = ScheduleRun(entry=PAYLOADS["entry"], due=t0)

    url = f"sqlite:///{tmp_path_factory.mktemp('xss')}/flow.db"
    store = open_store(url)
    store.apply(events)
    store.close()
    server = ServerThread(create_app(broker_url=None, store=url, embedded_consumer=False))
    server.start()
    try:
        yield {"url": server.url, "root": root, "child": child, "failed": failed, "trace": trace}
    finally:
        server.stop()


VIEWS = [
    ("flows list", "/flows", "name"),
    ("tasks list", "/tasks", "name"),
    ("failures", "/failures", "short name"),
    ("flow graph", "/flows/{root}", "name"),
    ("task detail: result, kwargs key, queue, host", "/tasks/{child}", "result"),
    ("task detail: exception, traceback, retry reason", "/tasks/{failed}", "exception"),
    ("trace", "/traces/{trace}", "short name"),
    ("registry", "/registry", "name"),
    ("workers", "/workers", "host"),
    ("schedules: entry, task, schedule, beat banner", "/schedules", "entry"),
]


async def _visit_all(ui: dict[str, str]) -> list[str]:
    """Open every view (and search) in a fresh context each; return what went wrong, per view."""
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for view, path, visible in [*VIEWS, ("search box", "/", "search")]:
                context = await browser.new_context(viewport={"width": 1440, "height": 900})
                context.set_default_timeout(15_000)
                page = await context.new_page()
                dialogs: list[str] = []
                page.on(
                    "dialog",
                    lambda d, seen=dialogs: (seen.append(d.message), asyncio.ensure_future(d.dismiss())),
                )
                try:
                    await page.goto(ui["url"] + path.format(**ui))
                    if visible == "search":
                        search = page.get_by_test_id("search")
                        await search.fill(PAYLOADS["name"])
                        await search.press("Enter")
                        await page.wait_for_load_state("networkidle")
                    else:
                        # The payload is on screen as the literal text it is (the trace view shows a dotted
                        # task name's last part, which here is `__xss=1;alert(1)">`).
                        text = 'alert(1)">' if visible == "short name" else PAYLOADS[visible]
                        await expect(page.get_by_text(text, exact=False).first).to_be_visible()
                    if path == "/schedules":
                        await expect(page.get_by_text(PAYLOADS["schedule"]).first).to_be_visible()
                        await expect(page.get_by_test_id("beat-down")).to_be_visible()
                    if "failed" in path:
                        await expect(page.get_by_test_id("traceback")).to_contain_text("<iframe id=xss-tb")
                    await _assert_inert(page, dialogs)
                except AssertionError as exc:
                    problems.append(f"{view}: {exc}")
                finally:
                    await context.close()
        finally:
            await browser.close()
    return problems


async def _assert_inert(page: Page, dialogs: list[str]) -> None:
    await expect(page.locator(INJECTED)).to_have_count(0)
    assert await page.evaluate("window.__xss") is None, "a payload ran"
    assert not dialogs, f"dialogs opened: {dialogs}"


def test_payloads_render_as_text_in_every_view(hostile_ui: dict[str, str]) -> None:
    # The async API in a thread of its own: the browser tests' sync Playwright may be running in this
    # thread already (one session), and the two cannot share a thread.
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["problems"] = asyncio.run(_visit_all(hostile_ui))
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(180)
    assert not thread.is_alive(), "the browser run did not finish"
    if "error" in result:
        raise result["error"]
    assert result["problems"] == []
