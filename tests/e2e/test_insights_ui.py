"""The insights in the browser: planned and never-run steps, lost and stuck tasks, the Failures page,
search inside arguments, and a failed task's "N more like this", in both themes and without console errors.

Workflows run through the stack's real worker; a lost worker's events (which no live worker can send on
demand) are published on the stack's own event stream, so the server's consumer folds them as it would a
real worker's. Screenshots of each view go to test-artifacts/.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import chain, group
from playwright.sync_api import Locator, Page, expect
from tests.e2e.conftest import PageWatch, Stack, screenshot
from tests.support.events import event, finished_task
from tests.support.wait import wait_for, wait_indexed

from celery_flow.events import Event, encode
from celery_flow.transport import from_url

pytestmark = [
    pytest.mark.timeout(180),
    # tests/support/canvas_app registers the same task names on its module-level app and on ours.
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]

# The header search first asks whether the text is a task or trace id; the answer "no" is a 404, which
# Chromium logs as a failed resource load. That probe is the search working, not an error of the page.
ID_PROBE_404 = re.compile(r"Failed to load resource: the server responded with a status of 404")


def node(page: Page, task_id: str) -> Locator:
    return page.get_by_test_id(f"node-{task_id}")


def console_errors(watch: PageWatch) -> list[str]:
    return [e for e in watch.errors if not ID_PROBE_404.search(e)]


def publish(stack: Stack, events: list[Event]) -> None:
    """Put `events` on the stack's event stream, where its server's consumer reads them."""
    transport = from_url(str(stack.app.conf.broker_url), prefix=stack.prefix)
    try:
        transport.publish([encode(e) for e in events])
    finally:
        transport.close()


@pytest.fixture
def release(stack: Stack) -> Iterator[list[str]]:
    """Keys of `t.hold` tasks to release; every one is released at the end, whatever happened."""
    keys: list[str] = []
    yield keys
    for key in keys:
        stack.app.backend.client.set(key, 1, ex=600)


def test_planned_steps_dashed_then_never_run_greyed(
    stack: Stack, page: Page, page_watch: PageWatch, release: list[str]
) -> None:
    """A 4-step chain whose 2nd step fails: steps 2-4 are drawn planned (hollow, dashed, their real names)
    from the first step's `sent`; once step 2 fails, steps 3 and 4 are greyed as never run, with why."""
    hold, fail, add, mul = (stack.task(n) for n in ("t.hold", "t.fail", "t.add", "t.mul"))
    key = f"cf-e2e-plan-{uuid.uuid4().hex}"
    release.append(key)
    result = chain(hold.si(key), fail.si("plan-e2e"), add.si(1, 1), mul.si(2, 3)).apply_async()
    third = result.parent
    second = third.parent
    first = second.parent
    ids = [str(r.id) for r in (first, second, third, result)]
    stack.wait_task(ids[0], "STARTED")

    page.goto(f"{stack.url}/flows/{ids[0]}")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true", timeout=60_000)
    expect(page.locator('[data-testid^="node-"]')).to_have_count(4)
    expect(node(page, ids[0])).to_have_attribute("data-state", "STARTED")
    for task_id, short in zip(ids[1:], ("fail", "add", "mul"), strict=True):
        planned = node(page, task_id)
        expect(planned).to_have_attribute("data-state", "PLANNED")
        expect(planned).to_contain_text(short)  # its real name, not "not sent yet"
        assert planned.evaluate("el => getComputedStyle(el).borderTopStyle") == "dashed"
    expect(page.get_by_test_id("flow-head")).to_contain_text("3 planned")
    timeline = page.get_by_test_id("timeline")
    expect(timeline.get_by_test_id(f"tl-row-{ids[2]}")).to_contain_text("planned, not sent yet")
    screenshot(page, "insights-planned")

    stack.app.backend.client.set(key, 1, ex=600)
    expect(node(page, ids[1])).to_have_attribute("data-state", "FAILURE", timeout=30_000)
    for task_id in ids[2:]:
        never = node(page, task_id)
        expect(never).to_have_attribute("data-state", "NOT_RUN", timeout=30_000)
        # The reason on hover (the node's tooltip) and on the node itself.
        expect(never).to_have_attribute("title", re.compile(r"upstream \S+ failed"))
        expect(never.get_by_test_id("node-reason")).to_contain_text("upstream")
        # Greyed: its name struck through in the muted colour.
        struck = never.locator(".nm").evaluate("el => getComputedStyle(el).textDecorationLine")
        assert "line-through" in struck
    expect(node(page, ids[2])).to_have_attribute("title", re.compile(rf"upstream {ids[1]} failed"))
    head = page.get_by_test_id("flow-head")
    expect(head.locator(".chip")).to_have_text("FAILURE", timeout=30_000)
    expect(head).to_contain_text("2 never ran", timeout=30_000)
    node(page, ids[2]).hover()
    screenshot(page, "insights-never-ran")

    # Its detail panel says why it never ran.
    node(page, ids[2]).click()
    panel = page.get_by_test_id("sidepanel")
    reason = panel.get_by_test_id("task-reason")
    expect(reason).to_contain_text("Never ran: upstream fail")
    expect(reason).to_contain_text("failed")
    # The upstream task in the reason is a link to it.
    expect(reason.get_by_role("link")).to_have_attribute("href", re.compile(rf"/tasks/{ids[1]}$"))
    screenshot(page, "insights-never-ran-panel")

    # The flows list counts what never ran.
    page.goto(stack.url + "/flows")
    row = page.locator(f'tr[data-root-id="{ids[0]}"]')
    expect(row).to_contain_text("2 never ran")
    expect(row.locator(".chip")).to_have_text("FAILURE")
    # The light theme draws the same marks in its own colours.
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.goto(f"{stack.url}/flows/{ids[0]}")
    expect(node(page, ids[3])).to_have_attribute("data-state", "NOT_RUN")
    screenshot(page, "insights-never-ran-light")
    assert console_errors(page_watch) == [], page_watch.errors


def test_collapsed_fan_out_counts_planned_steps(stack: Stack, page: Page, release: list[str]) -> None:
    """A chain's group of 30 steps, planned behind a held first step, is one collapsed node counting
    "30 planned"; once they ran, the same node counts "30 success"."""
    hold, add = stack.task("t.hold"), stack.task("t.add")
    key = f"cf-e2e-fan-{uuid.uuid4().hex}"
    release.append(key)
    result = chain(hold.si(key), group(add.si(i, i) for i in range(30))).apply_async()
    first_id = str(result.parent.id) if result.parent else ""
    assert first_id, "the chain's first step has an id"
    stack.wait_task(first_id, "STARTED")

    page.goto(f"{stack.url}/flows/{first_id}")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true", timeout=60_000)
    cluster = page.get_by_test_id("cluster-add")
    expect(cluster).to_contain_text("\u00d730")
    expect(cluster.locator('[data-count="PLANNED"]')).to_have_text("30 planned")
    screenshot(page, "insights-planned-fan-out")

    stack.app.backend.client.set(key, 1, ex=600)
    expect(cluster.locator('[data-count="SUCCESS"]')).to_have_text("30 success", timeout=30_000)
    expect(cluster.locator('[data-count="PLANNED"]')).to_have_count(0)


def test_lost_and_stuck_tasks_are_marked(stack: Stack, page: Page, page_watch: PageWatch) -> None:
    """A task started on a worker that went offline is LOST, its reason naming the worker; a task running
    far longer than its name's history is flagged stuck, in the graph, the task page and the stuck list."""
    run = uuid.uuid4().hex[:8]
    now = time.time()
    host = f"celery@gone-{run}"
    lost_id = f"lost-{run}"
    lost_name = f"t.e2e_lost_{run}"
    common: dict[str, Any] = {"name": lost_name, "root_id": lost_id, "hostname": host, "retries": 0}
    events = [
        event("worker.online", ts=now - 30, hostname=host, pid=4242, heartbeat_interval=2.0),
        event("sent", lost_id, now - 20, **common),
        event("received", lost_id, now - 19, **common),
        event("started", lost_id, now - 18, **common),
        event("worker.offline", ts=now - 10, hostname=host, pid=4242),
    ]
    # Stuck: twenty quick runs of a name, then one of it started a minute ago and still going.
    quick = f"t.e2e_quick_{run}"
    for i in range(20):
        events += finished_task(f"quick-{run}-{i}", ts=now - 300 + i, name=quick, runtime=0.01)
    stuck_id = f"stuck-{run}"
    busy = f"celery@busy-{run}"  # online and heard from: its task is running, not lost
    stuck_common: dict[str, Any] = {"name": quick, "root_id": stuck_id, "retries": 0}
    events += [
        event("worker.online", ts=now - 90, hostname=busy, pid=4343, heartbeat_interval=3600.0),
        event("sent", stuck_id, now - 61, **stuck_common),
        event("started", stuck_id, now - 60, hostname=busy, **stuck_common),
    ]
    publish(stack, events)
    stack.wait_task(lost_id, "LOST")

    page.goto(f"{stack.url}/flows/{lost_id}")
    lost = node(page, lost_id)
    expect(lost).to_have_attribute("data-state", "LOST")
    expect(lost).to_have_attribute("title", re.compile(re.escape(host)))
    expect(lost.locator(".lost-mark")).to_be_visible()
    expect(lost.get_by_test_id("node-reason")).to_contain_text(host)
    expect(page.get_by_test_id("flow-head").locator(".chip")).to_have_text("LOST")
    lost.hover()
    screenshot(page, "insights-lost")
    lost.click()
    expect(page.get_by_test_id("sidepanel").get_by_test_id("task-reason")).to_contain_text(host)

    page.goto(stack.url + "/flows")
    row = page.locator(f'tr[data-root-id="{lost_id}"]')
    expect(row).to_contain_text("1 lost")
    expect(row.locator(".chip")).to_have_text("LOST")

    # The stuck list (GET /api/tasks?stuck=true) and the stuck task's page carry the badge.
    page.goto(f"{stack.url}/tasks?stuck=true")
    stuck_row = page.locator(f'tr[data-task-id="{stuck_id}"]')
    expect(stuck_row.get_by_test_id("stuck-badge")).to_be_visible()
    expect(page.locator('tr[data-task-id^="quick-"]')).to_have_count(0)
    expect(page.get_by_test_id("tasks-stuck")).to_be_checked()
    screenshot(page, "insights-stuck-list")
    stuck_row.locator("a.flowname").click()
    expect(page.get_by_test_id("task-detail").get_by_test_id("stuck-badge")).to_be_visible()
    page.goto(f"{stack.url}/flows/{stuck_id}")
    expect(node(page, stuck_id).get_by_test_id("stuck-badge")).to_be_visible()
    screenshot(page, "insights-stuck-node")
    assert console_errors(page_watch) == [], page_watch.errors


def test_failures_page_lists_a_cluster_and_opens_its_tasks(
    stack: Stack, page: Page, page_watch: PageWatch
) -> None:
    """Failures of one bug with different messages are one cluster on the Failures page: its type, title,
    count, a sparkline and its task name; it opens to its tasks, and a failed task's page says "N more
    like this" and links there."""
    fail = stack.task("t.fail")
    results = [fail.delay(f"order {n} of customer {n * 7} was rejected") for n in (101, 202, 303)]
    for r in results:
        stack.wait_task(r.id, "FAILURE")
    detail = wait_for(
        lambda: (d := stack.api(f"/tasks/{results[0].id}")).get("cluster_size") and d,
        30,
        "the failed task's cluster",
    )
    fingerprint = detail["fingerprint"]
    size = int(detail["cluster_size"])
    assert size >= 3, detail

    page.goto(stack.url + "/")
    page.get_by_role("link", name="Failures").click()
    expect(page).to_have_url(re.compile(r"/failures$"))
    row = page.locator(f'tr[data-fingerprint="{fingerprint}"]')
    # Its title is the first message seen with numbers replaced by placeholders (another test of this
    # module may have failed t.fail first, so the title is read from the API).
    cluster = next(c for c in stack.api("/failures")["items"] if c["fingerprint"] == fingerprint)
    expect(row.locator(".exc-type-title")).to_have_text("ValueError")
    expect(row.locator(".cause-msg")).to_have_text(cluster["message"])
    expect(row.locator(".bigcount")).to_have_text(str(size))
    expect(row).to_contain_text("fail")  # the task name
    spark = row.get_by_test_id("sparkline")
    expect(spark.locator("canvas")).to_have_count(1)
    expect(spark).to_have_attribute("data-total", str(size))
    # The message is shown as text: no markup of it reaches the page.
    expect(page.locator("#root img")).to_have_count(0)
    screenshot(page, "insights-failures")
    page.get_by_test_id("window-1h").click()
    expect(page).to_have_url(re.compile(r"window=1h"))
    expect(page.locator(f'tr[data-fingerprint="{fingerprint}"]')).to_be_visible()
    page.get_by_test_id("failures-name").fill("t.add")
    page.get_by_test_id("failures-name").press("Enter")
    expect(page.get_by_text("No failures in the last 1 hour for t.add.")).to_be_visible()
    page.get_by_test_id("failures-name").fill("t.fail")
    page.get_by_test_id("failures-name").press("Enter")
    row = page.locator(f'tr[data-fingerprint="{fingerprint}"]')
    expect(row).to_be_visible()
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    expect(row.get_by_test_id("sparkline").locator("canvas")).to_have_count(1)
    screenshot(page, "insights-failures-light")

    # The cluster opens to its tasks.
    row.locator(".bigcount").click()
    expect(page).to_have_url(re.compile(rf"/tasks\?fingerprint={fingerprint}$"))
    table = page.get_by_test_id("tasks-table")
    expect(table.locator("tbody tr")).to_have_count(size)
    for r in results:
        expect(table.locator(f'tr[data-task-id="{r.id}"]')).to_be_visible()
    expect(table.locator('tbody tr:not([data-state="FAILURE"])')).to_have_count(0)
    screenshot(page, "insights-cluster-tasks")

    # A failed task's page: "N more like this", linking back to the cluster's tasks.
    page.goto(f"{stack.url}/tasks/{results[1].id}")
    link = page.get_by_test_id("cluster-link").get_by_role("link")
    expect(link).to_have_text(re.compile(rf"^{size - 1} more like this"))
    screenshot(page, "insights-more-like-this")
    link.click()
    expect(page).to_have_url(re.compile(rf"/tasks\?fingerprint={fingerprint}$"))
    expect(page.get_by_test_id("tasks-table").locator("tbody tr")).to_have_count(size)
    assert console_errors(page_watch) == [], page_watch.errors
    assert page_watch.dialogs == [], page_watch.dialogs


def test_search_finds_tasks_by_argument_value_and_key_value(
    stack: Stack, page: Page, page_watch: PageWatch
) -> None:
    run = uuid.uuid4().hex[:8]
    customer = random.randrange(10**8, 10**9)
    word = f"quokka{run}"
    echo = stack.task("t.echo")
    found = echo.delay(word, order={"customer_id": customer, "city": "New York"})
    other = echo.delay("wombat", order={"customer_id": customer + 1, "city": "Boston"})
    stack.wait_task(found.id, "SUCCESS")
    stack.wait_task(other.id, "SUCCESS")
    wait_indexed(lambda: stack.api("/health"), time.time())  # indexed behind the fold, in a second or two

    page.goto(stack.url + "/")
    search = page.get_by_test_id("search")
    expect(search).to_have_attribute("placeholder", re.compile("key:value"))
    # A word inside the arguments.
    search.fill(word)
    search.press("Enter")
    expect(page).to_have_url(re.compile(rf"/tasks\?q={word}$"))
    table = page.get_by_test_id("tasks-table")
    expect(table.locator(f'tr[data-task-id="{found.id}"]')).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(1)
    screenshot(page, "insights-search-word")

    # key:value matches a kwarg at any depth (here order.customer_id), and only that value.
    search.fill(f"customer_id:{customer}")
    search.press("Enter")
    expect(table.locator(f'tr[data-task-id="{found.id}"]')).to_be_visible()
    expect(table.locator(f'tr[data-task-id="{other.id}"]')).to_have_count(0)
    expect(table.locator("tbody tr")).to_have_count(1)
    # A quoted value with a space, typed in the list's own search field.
    page.get_by_test_id("tasks-q").fill('city:"New York"')
    page.get_by_test_id("tasks-q").press("Enter")
    expect(table.locator(f'tr[data-task-id="{found.id}"]')).to_be_visible()
    expect(table.locator(f'tr[data-task-id="{other.id}"]')).to_have_count(0)
    screenshot(page, "insights-search-key-value")
    table.locator(f'tr[data-task-id="{found.id}"] a.flowname').click()
    expect(page.get_by_test_id("task-detail")).to_have_attribute("data-task-id", found.id)
    assert console_errors(page_watch) == [], page_watch.errors
