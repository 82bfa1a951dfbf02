"""The overview (the UI's landing page), a task name's page with its heatmaps and trends, and the workers
page, in Chromium against the real server fed by the stack's real worker; both themes, no console errors.

Each figure is checked against what the API said and followed to the tasks behind it; the old deep links
(the flows list used to be at "/") still open what they opened. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect
from tests.e2e.conftest import PageWatch, Stack, screenshot
from tests.e2e.test_insights_ui import publish
from tests.support.events import event
from tests.support.wait import wait_for

pytestmark = [
    pytest.mark.timeout(180),
    # tests/support/canvas_app registers the same task names on its module-level app and on ours.
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]

# The header search probes ids with a 404; Chromium logs it as a failed load. Not an error of the page.
ID_PROBE_404 = re.compile(r"Failed to load resource: the server responded with a status of 404")
FAST, SLOW, FAILING = 12, 4, 3
DASH = "\u2013"  # the en dash between the ends of a range


def console_errors(watch: PageWatch) -> list[str]:
    return [e for e in watch.errors if not ID_PROBE_404.search(e)]


@pytest.fixture(scope="module")
def workload(stack: Stack) -> dict[str, Any]:
    """Quick and slow runs of t.slow, failures of t.fail, all stored in their final state."""
    slow, fail = stack.task("t.slow"), stack.task("t.fail")
    fast_ids = [slow.delay(0.01).id for _ in range(FAST)]
    slow_ids = [slow.delay(0.3).id for _ in range(SLOW)]
    failed_ids = [fail.delay(f"overview {n}").id for n in range(FAILING)]
    for task_id in fast_ids + slow_ids:
        stack.wait_task(task_id, "SUCCESS")
    for task_id in failed_ids:
        stack.wait_task(task_id, "FAILURE")
    return {"fast": fast_ids, "slow": slow_ids, "failed": failed_ids}


@pytest.fixture
def idle_queue(stack: Stack) -> Iterator[str]:
    """A queue no worker consumes; purged at the end."""
    queue = f"e2e_idle_{uuid.uuid4().hex[:8]}"
    yield queue
    with stack.app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def canvas_of(chart: Locator) -> Locator:
    return chart.locator("canvas")


def hover_cell(page: Page, chart: Locator, heat: dict[str, Any]) -> tuple[int, int, int]:
    """Hover the fullest cell of a heatmap the page drew from `heat`; its (row, column, count)."""
    i, j, count = max(
        ((i, j, c) for i, row in enumerate(heat["counts"]) for j, c in enumerate(row)), key=lambda t: t[2]
    )
    te, cols = heat["time_edges"], len(heat["value_edges"]) - 1
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    x = box["x"] + box["width"] * ((te[i] + te[i + 1]) / 2 - te[0]) / (te[-1] - te[0])
    y = box["y"] + box["height"] * (1 - (j + 0.5) / cols)
    page.mouse.move(x, y)
    return i, j, count


def test_overview_is_the_landing_page_with_data(
    stack: Stack, workload: dict[str, Any], idle_queue: str, page: Page, page_watch: PageWatch
) -> None:
    noop = stack.task("t.noop")
    for _ in range(3):
        noop.apply_async(queue=idle_queue)

    def backlog() -> dict[str, Any] | None:
        o: dict[str, Any] = stack.api("/stats/overview")
        waiting = {b["queue"]: b["waiting"] for b in o["backlog"]}
        return o if waiting.get(idle_queue) == 3 else None

    overview = wait_for(backlog, 30, f"a backlog of 3 in {idle_queue}")
    assert overview["finished"] >= FAST + SLOW + FAILING

    with page.expect_response(lambda r: "/api/stats/heatmap" in r.url) as heat_response:
        page.goto(stack.url + "/")
    heat = heat_response.value.json()
    expect(page.get_by_test_id("overview")).to_be_visible()
    expect(page.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    throughput = page.get_by_test_id("chart-throughput")
    expect(canvas_of(throughput)).to_have_count(1)
    assert int(throughput.get_attribute("data-total") or 0) >= FAST + SLOW + FAILING
    expect(page.get_by_test_id("legend-FAILURE")).to_contain_text("failure")
    expect(canvas_of(page.get_by_test_id("chart-failure-rate"))).to_have_count(1)
    expect(page.get_by_test_id("fig-failed")).to_contain_text("failed")
    expect(page.get_by_test_id("fig-workers").locator(".v")).not_to_have_text("0")
    backlog_row = page.get_by_test_id("backlog-table").locator(f'tr[data-queue="{idle_queue}"]')
    expect(backlog_row).to_contain_text("3")
    expect(page.get_by_test_id("panel-failures").locator("tr[data-fingerprint]").first).to_be_visible()
    expect(page.get_by_test_id("slowest-table").locator('tr[data-name="t.slow"]')).to_be_visible()

    # The heatmap of every name: a hovered cell says its time range, its duration range and its count.
    heatmap = page.get_by_test_id("heatmap-runtime")
    expect(canvas_of(heatmap)).to_have_count(1)
    assert int(heatmap.get_attribute("data-total") or 0) == sum(map(sum, heat["counts"]))
    _, _, count = hover_cell(page, heatmap, heat)
    tip = heatmap.locator(".chart-tip")
    expect(tip).to_be_visible()
    clock, dur = r"(\d\d-\d\d )?\d\d:\d\d(:\d\d)?", r"[\d.]+( (µs|ms|s|min|h))?"
    lines = [f"{clock} {DASH} {clock}", f"runtime {dur} {DASH} {dur}", f"{count} tasks?"]
    text = tip.text_content() or ""
    assert re.fullmatch("\n".join(lines), text), text
    screenshot(page, "overview")
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(canvas_of(page.get_by_test_id("chart-throughput"))).to_have_count(1)
    expect(canvas_of(page.get_by_test_id("heatmap-runtime"))).to_have_count(1)
    screenshot(page, "overview-light")

    # Each figure opens the tasks behind it, in the window it counts.
    page.get_by_test_id("fig-failed").click()
    expect(page).to_have_url(re.compile(r"/tasks\?state=FAILURE&since=\d+&until=\d+$"))
    expect(page.get_by_test_id("filter-since")).to_be_visible()
    table = page.get_by_test_id("tasks-table")
    for task_id in workload["failed"]:
        expect(table.locator(f'tr[data-task-id="{task_id}"]')).to_be_visible()
    expect(table.locator('tbody tr:not([data-state="FAILURE"])')).to_have_count(0)
    page.go_back()
    page.get_by_test_id("backlog-table").locator(f'tr[data-queue="{idle_queue}"] a').click()
    expect(page).to_have_url(re.compile(rf"/tasks\?queue={idle_queue}&state=PENDING$"))
    expect(page.get_by_test_id("filter-queue")).to_contain_text(idle_queue)
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator('tbody tr:not([data-state="PENDING"])')).to_have_count(0)
    page.go_back()
    page.get_by_test_id("fig-stuck").click()
    expect(page).to_have_url(re.compile(r"/tasks\?stuck=true$"))
    expect(page.get_by_test_id("tasks-stuck")).to_be_checked()
    page.go_back()
    page.get_by_test_id("slowest-table").get_by_role("link", name="t.slow").click()
    expect(page).to_have_url(re.compile(r"/registry/t\.slow$"))
    expect(page.get_by_test_id("name-page")).to_have_attribute("data-name", "t.slow")
    assert console_errors(page_watch) == [], page_watch.errors


def test_name_page_heatmaps_trend_failures_and_runs(
    stack: Stack, workload: dict[str, Any], page: Page, page_watch: PageWatch
) -> None:
    page.goto(stack.url + "/registry")
    page.locator('tr[data-name="t.slow"] a.flowname').click()
    expect(page).to_have_url(re.compile(r"/registry/t\.slow$"))
    runtime = page.get_by_test_id("heatmap-runtime")
    wait = page.get_by_test_id("heatmap-queue_wait")
    expect(canvas_of(runtime)).to_have_count(1)
    expect(canvas_of(wait)).to_have_count(1)
    runs = FAST + SLOW
    assert int(runtime.get_attribute("data-total") or 0) >= runs
    assert int(wait.get_attribute("data-total") or 0) >= runs
    latency = page.get_by_test_id("chart-latency")
    expect(canvas_of(latency)).to_have_count(1)
    assert int(latency.get_attribute("data-points") or 0) > 0
    expect(canvas_of(page.get_by_test_id("chart-runs"))).to_have_count(1)
    expect(page.get_by_test_id("fig-runs").locator(".v")).not_to_have_text("0")
    expect(page.get_by_test_id("name-signature")).to_contain_text("slow(seconds: float = 1.0)")
    recent = page.get_by_test_id("panel-recent").get_by_test_id("tasks-table")
    expect(recent.locator("tbody tr").first).to_be_visible()
    expect(recent.locator("tbody tr", has_text="slow").first).to_be_visible()
    screenshot(page, "name-page")

    # A failing name: its failure causes, its docstring-less signature, the "Failed" figure's tasks.
    page.goto(stack.url + "/registry/t.fail")
    clusters = page.get_by_test_id("panel-name-failures").locator("tr[data-fingerprint]")
    expect(clusters.first).to_contain_text("ValueError")
    expect(page.get_by_test_id("fig-name-failed").locator(".v")).not_to_have_text("0")
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(canvas_of(page.get_by_test_id("heatmap-runtime"))).to_have_count(1)
    screenshot(page, "name-page-fail-light")
    page.get_by_test_id("fig-name-failed").click()
    expect(page).to_have_url(re.compile(r"/tasks\?name=t\.fail&state=FAILURE$"))
    for task_id in workload["failed"]:
        expect(page.get_by_test_id("tasks-table").locator(f'tr[data-task-id="{task_id}"]')).to_be_visible()

    # A name with a docstring shows it.
    page.goto(stack.url + "/registry/t.add")
    expect(page.get_by_test_id("name-doc")).to_contain_text("Add two numbers.")
    assert console_errors(page_watch) == [], page_watch.errors


def test_workers_page_pool_concurrency_queues_and_live_heartbeat_age(
    stack: Stack, workload: dict[str, Any], page: Page, page_watch: PageWatch
) -> None:
    queue = str(stack.app.conf.task_default_queue)
    # A worker that came and left is kept, saying when it left.
    gone, now = f"celery@gone-{uuid.uuid4().hex[:8]}", time.time()
    publish(
        stack,
        [
            event("worker.online", ts=now - 300, hostname=gone, pid=4545, heartbeat_interval=2.0),
            event("worker.offline", ts=now - 120, hostname=gone, pid=4545),
        ],
    )
    wait_for(lambda: any(w["hostname"] == gone for w in stack.api("/workers")), 30, f"{gone} to be stored")
    page.goto(stack.url + "/workers")
    left = page.locator(f'tr[data-hostname="{gone}"]')
    expect(left).to_have_attribute("data-status", "offline")
    expect(left.get_by_test_id("offline-at")).to_have_text(re.compile(r"^left (1|2) min ago$"))
    row = page.locator('tr[data-status="online"]', has=page.locator(f'.pill:text-is("{queue}")'))
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("worker-pool")).to_contain_text("thread")
    expect(row.get_by_test_id("worker-pool")).to_contain_text("concurrency 4")
    expect(row.get_by_test_id("worker-queues")).to_contain_text(queue)
    # The heartbeat's age ticks on screen without a reload.
    age = row.get_by_test_id("heartbeat-age")
    first = age.inner_text()
    expect(age).not_to_have_text(first, timeout=10_000)
    screenshot(page, "workers-details")
    hostname = row.get_attribute("data-hostname")
    row.get_by_test_id("worker-running").click()
    expect(page).to_have_url(re.compile(r"/tasks\?worker=.+&state=STARTED$"))
    expect(page.get_by_test_id("filter-worker")).to_contain_text(str(hostname))
    page.get_by_test_id("theme-toggle").click()
    page.goto(stack.url + "/workers")
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(page.get_by_test_id("workers-table")).to_be_visible()
    screenshot(page, "workers-details-light")
    assert console_errors(page_watch) == [], page_watch.errors


def test_old_deep_links_still_work(
    stack: Stack, workload: dict[str, Any], page: Page, page_watch: PageWatch
) -> None:
    """The flows list moved from "/" to "/flows": a link made for it at "/" lands there, query kept."""
    task_id = workload["failed"][0]
    page.goto(stack.url + "/?state=FAILURE&name=t.fail")
    expect(page).to_have_url(re.compile(r"/flows\?state=FAILURE&name=t\.fail$"))
    table = page.get_by_test_id("flows-table")
    expect(table.locator(f'tr[data-root-id="{task_id}"]')).to_be_visible()
    expect(table.locator('tbody tr:not([data-state="FAILURE"])')).to_have_count(0)
    expect(page.get_by_role("link", name="Flows", exact=True)).to_have_attribute("aria-current", "page")

    page.goto(stack.url + "/flows")
    expect(table.locator(f'tr[data-root-id="{task_id}"]')).to_be_visible()
    page.goto(f"{stack.url}/flows/{task_id}")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true")
    page.goto(f"{stack.url}/tasks/{task_id}")
    expect(page.get_by_test_id("task-detail")).to_have_attribute("data-task-id", task_id)
    page.goto(f"{stack.url}/tasks?name=t.fail&state=FAILURE")
    expect(page.get_by_test_id("tasks-table").locator(f'tr[data-task-id="{task_id}"]')).to_be_visible()
    for path, testid in (("/registry", "registry-table"), ("/workers", "workers-table")):
        page.goto(stack.url + path)
        expect(page.get_by_test_id(testid)).to_be_visible()
    page.goto(stack.url + "/failures")
    expect(page.get_by_test_id("failures-table")).to_be_visible()
    # The brand goes home, to the overview; the nav's Flows is one click away.
    page.locator("a.brand").click()
    expect(page.get_by_test_id("overview")).to_be_visible()
    page.get_by_role("link", name="Flows", exact=True).click()
    expect(page).to_have_url(re.compile(r"/flows$"))
    expect(page.get_by_test_id("flows-table")).to_be_visible()
    assert console_errors(page_watch) == [], page_watch.errors
