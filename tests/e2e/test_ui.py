"""What a user sees in the browser, against the real server fed by a real Celery worker.

Each test runs real workflows through the worker, opens a view by its deep link (or by clicking), and
checks what is on screen with Playwright's auto-waiting `expect`. A screenshot of each view is saved to
test-artifacts/.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import chain, chord, group
from fastapi import FastAPI
from playwright.sync_api import Browser, Locator, Page, expect
from tests.e2e.conftest import PageWatch, Stack, screenshot
from tests.support.server_helpers import ServerThread
from tests.support.wait import wait_for

import celery_flow
from celery_flow.server import create_app
from celery_flow.server.extension import CeleryFlowExtension

pytestmark = [
    pytest.mark.timeout(180),
    # tests/support/canvas_app registers the same task names on its module-level app and on ours.
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]

XSS = "<img src=x onerror=alert(1)>"


def node(page: Page, task_id: str) -> Locator:
    return page.get_by_test_id(f"node-{task_id}")


@pytest.fixture(scope="module")
def canvas(stack: Stack) -> dict[str, str]:
    """chain(add, chord([add, flaky (retries once), mul], xsum)): every id of it, once it has finished."""
    add, flaky, mul, xsum = (stack.task(n) for n in ("t.add", "t.flaky", "t.mul", "t.xsum"))
    header = [add.si(2, 2), flaky.si(succeed_on=1, countdown=0.2), mul.si(3, 3)]
    workflow = chain(add.si(1, 1), chord(header, xsum.s()))
    result = workflow.apply_async()
    assert result.get(timeout=60) == 4 + 1 + 9
    callback_id = str(result.id)
    root_id = str(stack.wait_task(callback_id, "SUCCESS")["root_id"])

    # Every task stored as finished, not just the callback: Celery sends the callback from inside the
    # last header task's run, so on a busy machine the callback's `succeeded` can reach the server
    # before that header task's own.
    def finished() -> bool:
        nodes = stack.http.get(f"/api/flows/{root_id}").json()["nodes"]
        return len(nodes) == 5 and all(n["state"] == "SUCCESS" for n in nodes)

    wait_for(finished, 30, f"every task of flow {root_id} to succeed")
    return {"root_id": root_id, "callback_id": callback_id}


def test_flows_list_and_chord_graph(stack: Stack, canvas: dict[str, str], page: Page) -> None:
    root_id, callback_id = canvas["root_id"], canvas["callback_id"]
    page.goto(stack.url + "/flows")
    row = page.locator(f'tr[data-root-id="{root_id}"]')
    expect(row).to_be_visible()
    expect(row.locator(".chip")).to_have_text("SUCCESS")
    expect(row).to_contain_text("5 success")  # add, the 3 header tasks, the callback
    screenshot(page, "flows")

    row.locator("a.flowname").click()
    expect(page).to_have_url(re.compile(rf"/flows/{root_id}$"))
    graph = page.get_by_test_id("graph")
    expect(graph).to_have_attribute("data-ready", "true")
    # The chord: a container holding the header, the callback outside it, one chord edge per member.
    expect(page.get_by_test_id("container-chord")).to_have_count(1)
    expect(node(page, callback_id)).to_be_visible()
    expect(node(page, callback_id)).to_contain_text("xsum")
    expect(node(page, callback_id)).to_have_attribute("data-state", "SUCCESS")
    expect(page.locator(".react-flow__edge.edge-chord")).to_have_count(3)
    expect(page.locator(".react-flow__edge.edge-chain")).to_have_count(3)
    # The retried header task carries a retry badge; its timeline bar has a retry segment.
    flaky_node = page.locator('[data-testid^="node-"]', has_text="flaky")
    expect(flaky_node.get_by_test_id("retry-badge")).to_have_text("↻1")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_be_visible()
    flaky_row = timeline.locator('[data-testid^="tl-row-"]', has_text="flaky")
    expect(flaky_row.get_by_test_id("seg-retry")).to_have_count(1)
    expect(flaky_row.get_by_test_id("seg-running")).to_have_count(2)
    expect(timeline.locator('[data-testid^="tl-row-"]')).to_have_count(5)
    screenshot(page, "flow-graph")

    # Clicking the callback opens its detail beside the graph, deep-linked with ?task=.
    node(page, callback_id).click()
    panel = page.get_by_test_id("sidepanel")
    expect(panel.get_by_test_id("task-detail")).to_have_attribute("data-task-id", callback_id)
    expect(panel).to_contain_text("t.xsum")
    expect(panel.locator(".json").nth(2)).to_contain_text("14")  # the result
    expect(page).to_have_url(re.compile(rf"\?task={callback_id}$"))
    screenshot(page, "flow-panel")

    # Keyboard: Esc closes the panel; a focused node opens with Enter.
    page.keyboard.press("Escape")
    expect(page.get_by_test_id("sidepanel")).to_have_count(0)
    node(page, root_id).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("sidepanel").get_by_test_id("task-detail")).to_have_attribute(
        "data-task-id", root_id
    )

    # Timeline-only view, and light theme (persisted across a reload).
    page.get_by_test_id("mode-timeline").click()
    expect(page.get_by_test_id("graph")).to_have_count(0)
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(page.get_by_test_id("timeline")).to_be_visible()
    screenshot(page, "flow-timeline-light")
    page.get_by_test_id("mode-split").click()


def test_task_detail_scrubbed_xss_and_traceback(stack: Stack, page: Page, page_watch: PageWatch) -> None:
    echo, fail = stack.task("t.echo"), stack.task("t.fail")
    echoed = echo.delay(XSS, password="hunter2", user="bob", blob="x" * 20_000)
    failed = fail.delay("kaboom-e2e")
    stack.wait_task(echoed.id, "SUCCESS")
    stack.wait_task(failed.id, "FAILURE")

    page.goto(f"{stack.url}/tasks/{echoed.id}")
    detail = page.get_by_test_id("task-detail")
    expect(detail).to_contain_text("t.echo")
    kwargs = page.get_by_label("kwargs", exact=True)
    expect(kwargs).to_contain_text('"[Filtered]"')
    expect(kwargs.locator(".j-filtered")).to_have_count(1)
    expect(detail).not_to_contain_text("hunter2")
    expect(kwargs).to_contain_text('"bob"')
    # A value over the size cap is cut in the worker and marked as such, not silently shortened.
    expect(kwargs.locator(".j-truncbadge")).to_contain_text("truncated")
    # The markup argument is shown as text and runs nothing: no <img> in the page, no dialog.
    expect(page.get_by_label("args", exact=True)).to_contain_text(XSS)
    expect(page.locator("#root img")).to_have_count(0)
    expect(page.get_by_test_id("history")).to_contain_text("Succeeded")
    screenshot(page, "task-scrubbed-xss")

    page.goto(f"{stack.url}/tasks/{failed.id}")
    expect(page.get_by_test_id("exception")).to_contain_text("ValueError")
    expect(page.get_by_test_id("exception")).to_contain_text("kaboom-e2e")
    traceback = page.get_by_test_id("traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("raise ValueError(msg)")
    expect(page.get_by_role("button", name="Copy traceback")).to_be_visible()
    screenshot(page, "task-failure")
    assert page_watch.dialogs == [], page_watch.dialogs


def test_retry_reason_and_relations(stack: Stack, canvas: dict[str, str], page: Page) -> None:
    graph = stack.api(f"/flows/{canvas['root_id']}")
    flaky = next(n for n in graph["nodes"] if n["name"] == "t.flaky")
    page.goto(f"{stack.url}/tasks/{flaky['task_id']}")
    retries = page.get_by_test_id("retries")
    expect(retries.locator("li")).to_have_count(1)
    expect(retries).to_contain_text("attempt 0 failed")
    # Its siblings in the chord header and its parent link are there, as links to their pages.
    detail = page.get_by_test_id("task-detail")
    expect(detail.locator(".relations a.tasklink").first).to_be_visible()
    expect(detail.locator(".relations")).to_contain_text("add")
    screenshot(page, "task-retry")


def test_live_state_change_without_reload(stack: Stack, page: Page) -> None:
    """A running flow changes in place: the held task turns SUCCESS, then its chain successor, drawn
    PLANNED from the first publish, runs in the same node."""
    hold = stack.task("t.hold")
    run = uuid.uuid4().hex
    first_key, second_key = f"cf-e2e-live-{run}", f"cf-e2e-live-list-{run}"
    release = stack.app.backend.client.set
    workflow = chain(hold.si(first_key), stack.task("t.add").si(40, 2)).apply_async()
    held_id = str(workflow.parent.id)  # type: ignore[union-attr]
    try:
        stack.wait_task(held_id, "STARTED")
        page.goto(f"{stack.url}/flows/{held_id}")
        expect(node(page, held_id)).to_have_attribute("data-state", "STARTED")
        expect(node(page, str(workflow.id))).to_have_attribute("data-state", "PLANNED")
        expect(page.locator('[data-testid^="node-"]')).to_have_count(2)
        expect(page.get_by_test_id("graph")).to_have_attribute("data-layouts", "1")
        expect(page.get_by_test_id("conn")).to_have_text("Live")
        expect(page.get_by_test_id("flow-head").locator(".chip")).to_have_text("RUNNING")
        page.evaluate("window.__sameDocument = true")
        screenshot(page, "flow-live-started")

        release(first_key, 1, ex=600)
        expect(node(page, held_id)).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
        expect(node(page, str(workflow.id))).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
        expect(page.locator(".react-flow__edge.edge-chain")).to_have_count(1)
        expect(page.get_by_test_id("flow-head").locator(".chip")).to_have_text("SUCCESS")
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        # Several state changes arrived, and no new node: states change in place, with no new layout.
        expect(page.locator('[data-testid^="node-"]')).to_have_count(2)
        expect(page.get_by_test_id("graph")).to_have_attribute("data-layouts", "1")
        screenshot(page, "flow-live-done")

        # The flows list updates live too: a new flow appears running, then turns SUCCESS in place.
        page.get_by_role("link", name="Flows").click()
        expect(page.get_by_test_id("flows-table")).to_be_visible()
        second = hold.delay(second_key)
        row = page.locator(f'tr[data-root-id="{second.id}"]')
        expect(row).to_have_attribute("data-state", "RUNNING", timeout=20_000)
        release(second_key, 1, ex=600)
        expect(row).to_have_attribute("data-state", "SUCCESS", timeout=20_000)
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    finally:
        release(first_key, 1, ex=600)
        release(second_key, 1, ex=600)


def test_flow_page_says_failure_as_the_list_does_while_a_branch_still_runs(stack: Stack, page: Page) -> None:
    """One branch of a group fails while the other still runs: the list calls the flow FAILURE, and so
    do its page and its trace's page, live and after a reload."""
    hold = stack.task("t.hold")
    run, trace_id = uuid.uuid4().hex, uuid.uuid4().hex
    keep, breaks = f"cf-e2e-keep-{run}", f"cf-e2e-fail-{run}"
    with celery_flow.trace(trace_id):
        result = group(hold.si(keep), hold.si(breaks, fail=True)).apply_async()
    root_id = str(result.id)  # a group applied outside a task is its own flow, rooted at the group id
    running_id, failing_id = (str(r.id) for r in result.results)
    release = stack.app.backend.client.set
    try:
        stack.wait_task(running_id, "STARTED")
        stack.wait_task(failing_id, "STARTED")
        page.goto(f"{stack.url}/flows/{root_id}")
        head = page.get_by_test_id("flow-head")
        # A deadline, not a threshold: on a loaded machine the first layout takes a while.
        expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true", timeout=60_000)
        expect(node(page, failing_id)).to_have_attribute("data-state", "STARTED")
        expect(head.locator(".chip")).to_have_text("RUNNING")
        expect(page.get_by_test_id("conn")).to_have_text("Live")
        page.evaluate("window.__sameDocument = true")

        release(breaks, 1, ex=600)
        expect(node(page, failing_id)).to_have_attribute("data-state", "FAILURE", timeout=30_000)
        expect(head.locator(".chip")).to_have_text("FAILURE", timeout=30_000)
        expect(node(page, running_id)).to_have_attribute("data-state", "STARTED")
        expect(head).to_contain_text("so far")
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
        screenshot(page, "flow-failed-while-running")

        page.get_by_role("link", name="Flows").click()
        row = page.locator(f'tr[data-root-id="{root_id}"]')
        expect(row.locator(".chip")).to_have_text("FAILURE", timeout=30_000)
        page.goto(f"{stack.url}/flows/{root_id}")
        expect(head.locator(".chip")).to_have_text("FAILURE", timeout=30_000)
        expect(head).to_contain_text("1 failure")
        page.goto(f"{stack.url}/traces/{trace_id}")
        expect(page.get_by_test_id("trace-head").locator(".chip")).to_have_text("FAILURE", timeout=30_000)
        expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true", timeout=60_000)
        screenshot(page, "trace-failed-while-running")
        assert stack.api(f"/tasks/{running_id}")["state"] == "STARTED"  # the other branch never stopped
    finally:
        release(keep, 1, ex=600)
        release(breaks, 1, ex=600)
    stack.wait_task(running_id, "SUCCESS")


def test_search_jumps_to_task_and_trace(stack: Stack, page: Page) -> None:
    trace_id = uuid.uuid4().hex
    with celery_flow.trace(trace_id):
        first = stack.task("t.spawn_traced").delay()
        second = stack.task("t.add").delay(20, 22)
    first_child = first.get(timeout=30)
    stack.wait_task(first_child, "SUCCESS")
    stack.wait_task(second.id, "SUCCESS")

    page.goto(stack.url + "/flows")
    expect(page.get_by_test_id("flows-table")).to_be_visible()
    page.keyboard.press("/")
    search = page.get_by_test_id("search")
    expect(search).to_be_focused()
    search.fill(second.id)
    search.press("Enter")
    expect(page).to_have_url(re.compile(rf"/tasks/{second.id}$"))
    expect(page.get_by_test_id("task-detail")).to_contain_text("t.add")

    search.fill(trace_id)
    search.press("Enter")
    expect(page).to_have_url(re.compile(rf"/traces/{trace_id}$"))
    expect(page.get_by_test_id("trace-head")).to_contain_text("2 flows")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true")
    for task_id in (first.id, first_child, second.id):
        expect(node(page, task_id)).to_have_attribute("data-state", "SUCCESS")
    expect(page.get_by_test_id("container-flow")).to_have_count(2)
    expect(page.locator(".react-flow__edge.edge-spawn")).to_have_count(1)
    screenshot(page, "trace")


def test_registry_and_workers(stack: Stack, canvas: dict[str, str], page: Page) -> None:
    page.goto(stack.url + "/registry")
    row = page.locator('tr[data-name="t.add"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("success")
    expect(row).to_contain_text("Add two numbers.")
    expect(page.locator('tr[data-name="t.flaky"]')).to_be_visible()
    screenshot(page, "registry")
    # Figures never break across lines ("255" over "ms"), even on a laptop-width window.
    page.set_viewport_size({"width": 1024, "height": 800})
    lines = row.locator("td.num").evaluate_all(
        """tds => tds.map(td => {
            const range = document.createRange();
            range.selectNodeContents(td);
            return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
        })"""
    )
    assert lines == [1] * 4, lines  # runs, failure rate, p50, p95

    page.get_by_role("link", name="Workers").click()
    online = page.locator('tr[data-status="online"]')
    expect(online.first).to_be_visible()
    expect(online.first).to_contain_text("@")
    screenshot(page, "workers")
    # Its task count links to the flows it ran tasks of.
    hostname = online.first.get_attribute("data-hostname")
    online.first.get_by_title("Flows with tasks run on this worker").click()
    expect(page.locator(".activefilters")).to_contain_text(f"ran on {hostname}")
    expect(page.locator(f'tr[data-root-id="{canvas["root_id"]}"]')).to_be_visible()


@pytest.fixture
def mounted(stack: Stack) -> Iterator[str]:
    """The same store served by the extension mounted under /ops/flow in a user's FastAPI app."""
    ext = CeleryFlowExtension(store=stack.store_url, embedded_consumer=False, prefix=stack.prefix)
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router, prefix="/ops/flow")
    server = ServerThread(app)
    try:
        server.start("/ops/flow/api/health")
        yield server.url + "/ops/flow"
    finally:
        server.stop()


def test_deep_links_under_a_mount_prefix(mounted: str, canvas: dict[str, str], page: Page) -> None:
    root_id = canvas["root_id"]
    page.goto(f"{mounted}/flows/{root_id}?task={canvas['callback_id']}")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true")
    expect(node(page, canvas["callback_id"])).to_be_visible()
    expect(page.get_by_test_id("sidepanel")).to_contain_text("t.xsum")
    expect(page.get_by_test_id("conn")).to_have_text("Live")
    # A non-root task id in a flow link (pasted from a log) opens its flow with the task selected.
    page.goto(f"{mounted}/flows/{canvas['callback_id']}")
    expect(page).to_have_url(f"{mounted}/flows/{root_id}?task={canvas['callback_id']}")
    expect(page.get_by_test_id("sidepanel")).to_contain_text("t.xsum")
    page.get_by_role("link", name="Registry").click()
    expect(page).to_have_url(f"{mounted}/registry")
    expect(page.locator('tr[data-name="t.xsum"]')).to_be_visible()


def test_huge_fan_out_collapses_and_expands(stack: Stack, page: Page) -> None:
    spawner = stack.task("t.spawn").delay(30)
    children = spawner.get(timeout=30)
    for child in children:
        stack.wait_task(child, "SUCCESS")
    page.goto(f"{stack.url}/flows/{spawner.id}")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true")
    cluster = page.get_by_test_id("cluster-add")
    expect(cluster).to_contain_text("\u00d730")  # the multiplication sign
    expect(cluster).to_contain_text("30 success")
    expect(page.locator('[data-testid^="node-"]')).to_have_count(1)  # only the spawner is drawn alone
    screenshot(page, "flow-cluster")
    cluster.click()
    expect(page.locator('[data-testid^="node-"]')).to_have_count(31, timeout=15_000)
    expect(page.get_by_test_id("cluster-add")).to_have_count(0)
    # The timeline always covers every task, collapsed or not (its rows are virtualised).
    expect(page.get_by_test_id("timeline").locator(".tl-head")).to_contain_text("31 tasks")


def test_flow_filters(stack: Stack, page: Page) -> None:
    failed = stack.task("t.fail").delay("filter-me")
    ok = stack.task("t.mul").delay(6, 7)
    stack.wait_task(failed.id, "FAILURE")
    stack.wait_task(ok.id, "SUCCESS")
    page.goto(stack.url + "/flows")
    page.get_by_test_id("filter-state").select_option("FAILURE")
    expect(page).to_have_url(re.compile(r"\?state=FAILURE"))
    table = page.get_by_test_id("flows-table")
    expect(table.locator(f'tr[data-root-id="{failed.id}"]')).to_be_visible()
    expect(table.locator(f'tr[data-root-id="{ok.id}"]')).to_have_count(0)
    expect(table.locator('tbody tr:not([data-state="FAILURE"])')).to_have_count(0)
    screenshot(page, "flows-filtered")
    # Free text over ids: the id prefix of one flow finds just that flow.
    page.get_by_test_id("filter-state").select_option("")
    page.get_by_test_id("filter-q").fill(ok.id)
    page.get_by_test_id("filter-q").press("Enter")
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table.locator(f'tr[data-root-id="{ok.id}"]')).to_be_visible()
    # A custom time range: from an hour ahead finds nothing; from ten minutes ago finds the flow again.
    page.get_by_test_id("filter-range").select_option("custom")
    ahead = datetime.now() + timedelta(hours=1)
    page.get_by_test_id("filter-since").fill(ahead.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"range=custom"))
    expect(page.get_by_text("No flow matches these filters.")).to_be_visible()
    earlier = datetime.now() - timedelta(minutes=10)
    page.get_by_test_id("filter-since").fill(earlier.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Apply").click()
    expect(table.locator(f'tr[data-root-id="{ok.id}"]')).to_be_visible()


def test_connection_status_is_honest(stack: Stack, page: Page) -> None:
    """Live while the socket is up, Reconnecting once the server is gone, and caught up when it is back."""
    server = ServerThread(extension_app(stack))
    server.start()
    try:
        page.goto(server.url + "/flows")
        expect(page.get_by_test_id("conn")).to_have_text("Live")
        page.evaluate("window.__sameDocument = true")
    finally:
        server.stop()
    expect(page.get_by_test_id("conn")).to_have_text("Reconnecting", timeout=15_000)
    screenshot(page, "reconnecting")
    # While this server is down a flow runs (stored by the stack's own server); nothing pushes it here.
    missed = stack.task("t.mul").delay(7, 6)
    stack.wait_task(missed.id, "SUCCESS")
    again = ServerThread(extension_app(stack), port=server.port)
    again.start()
    try:
        expect(page.get_by_test_id("conn")).to_have_text("Live", timeout=30_000)
        expect(page.locator(f'tr[data-root-id="{missed.id}"]')).to_be_visible()
        assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
    finally:
        again.stop()


def extension_app(stack: Stack) -> FastAPI:
    """A standalone server process reading the shared store, without its own consumer."""
    ext = CeleryFlowExtension(store=stack.store_url, embedded_consumer=False, prefix=stack.prefix)
    app = FastAPI(lifespan=ext.lifespan)
    app.include_router(ext.router)
    return app


def test_errback_edge_and_system_light_theme(stack: Stack, browser: Browser, built_ui: object) -> None:
    """A failed task's error callback hangs off it by a red errback edge; a light system theme is used."""
    failing = stack.task("t.fail").apply_async(("errback-e2e",), link_error=stack.task("t.errback").s())
    stack.wait_task(failing.id, "FAILURE")

    def both_stored() -> dict[str, Any] | None:
        graph: dict[str, Any] = stack.api(f"/flows/{failing.id}")
        return graph if len(graph["nodes"]) == 2 else None

    graph = wait_for(both_stored, 30, "the errback task to be stored")
    errback_id = next(n["task_id"] for n in graph["nodes"] if n["task_id"] != failing.id)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    try:
        page = context.new_page()
        page.goto(f"{stack.url}/flows/{failing.id}")
        expect(page.locator("html")).to_have_attribute("data-theme", "light")
        expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true")
        expect(node(page, failing.id)).to_have_attribute("data-state", "FAILURE")
        expect(node(page, errback_id)).to_contain_text("errback")
        expect(page.locator(".react-flow__edge.edge-errback")).to_have_count(1)
        expect(page.get_by_test_id("flow-head").locator(".chip")).to_have_text("FAILURE")
        # Picking "failure" in the header's counts dims the other tasks and filters the timeline.
        page.get_by_test_id("pick-FAILURE").click()
        expect(node(page, errback_id)).to_have_class(re.compile(r"\bdim\b"))
        expect(node(page, failing.id)).not_to_have_class(re.compile(r"\bdim\b"))
        expect(page.get_by_test_id("timeline").locator('[data-testid^="tl-row-"]')).to_have_count(1)
        screenshot(page, "flow-errback-light")
        page.get_by_test_id("pick-FAILURE").click()
        expect(node(page, errback_id)).not_to_have_class(re.compile(r"\bdim\b"))
        expect(page.get_by_test_id("timeline").locator('[data-testid^="tl-row-"]')).to_have_count(2)
    finally:
        context.close()


def test_degraded_server_is_said_plainly(tmp_path: Path, page: Page) -> None:
    """With its broker unreachable, the UI says the server is degraded and why, instead of looking live."""
    app = create_app(
        broker_url="redis://127.0.0.1:9/0", store=f"sqlite:///{tmp_path}/flow.db", prefix="cf_e2e_down"
    )
    server = ServerThread(app)
    server.start()
    try:
        page.goto(server.url + "/flows")
        expect(page.get_by_test_id("conn")).to_have_text("Server degraded", timeout=20_000)
        expect(page.get_by_test_id("status-banner")).to_contain_text("broker")
        expect(page.get_by_text("No flows recorded yet")).to_be_visible()
        screenshot(page, "degraded")
    finally:
        server.stop()


def test_flows_cursor_paging(stack: Stack, page: Page) -> None:
    noop = stack.task("t.noop")
    ids = [noop.delay().id for _ in range(55)]
    for task_id in ids:
        stack.wait_task(task_id, "SUCCESS")
    page.goto(stack.url + "/flows?name=t.noop")
    table = page.get_by_test_id("flows-table")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(50)
    expect(table.locator(f'tr[data-root-id="{ids[-1]}"]')).to_be_visible()  # newest first
    older = page.get_by_role("button", name="Older →")
    expect(older).to_be_enabled()
    older.click()
    expect(page).to_have_url(re.compile(r"cursor="))
    expect(rows).to_have_count(5)
    expect(table.locator(f'tr[data-root-id="{ids[0]}"]')).to_be_visible()
    expect(older).to_be_disabled()
    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(50)
    expect(table.locator(f'tr[data-root-id="{ids[-1]}"]')).to_be_visible()


def test_behind_basic_auth(stack: Stack, browser: Browser, canvas: dict[str, str]) -> None:
    """With CELERY_FLOW_BASIC_AUTH set, the browser's credentials carry the pages, the API and the socket."""
    app = create_app(
        store=stack.store_url, embedded_consumer=False, prefix=stack.prefix, basic_auth=("ops", "s3cret")
    )
    server = ServerThread(app)
    server.start(auth=("ops", "s3cret"))
    context = browser.new_context(http_credentials={"username": "ops", "password": "s3cret"})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/flows/{canvas['root_id']}")
        expect(node(page, canvas["callback_id"])).to_have_attribute("data-state", "SUCCESS")
        expect(page.get_by_test_id("conn")).to_have_text("Live")
    finally:
        context.close()
        server.stop()
