"""The Schedules page in Chromium against the real server: each entry with its last runs as a strip (on
time, late, failed, missed), the next expected run, links to its runs, and a banner while beat is down;
the overview's figure that opens it. Both themes, no console errors; screenshots go to test-artifacts/.

A beat's events (its schedule on worker.online, runs marked on `sent`, its offline) are published on the
stack's own event stream, as tests/e2e/test_insights_ui.py publishes a lost worker's: what a real beat
sends is tested against a real `celery beat` in tests/integration/test_schedules.py.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
from playwright.sync_api import Page, expect
from tests.e2e.conftest import PageWatch, Stack, screenshot
from tests.e2e.test_insights_ui import publish
from tests.support.events import event, finished_task
from tests.support.wait import wait_for

from celery_flow.events import Event, ScheduleInfo, ScheduleRun

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::celery.exceptions.DuplicateTaskNameWarning"),
]

ID_PROBE_404 = re.compile(r"Failed to load resource: the server responded with a status of 404")
SYNC, NIGHTLY = "sync invoices", "nightly <b>report</b>"


def run_events(
    task_id: str, name: str, entry: str, sent: float, due: float, missed: int = 0, failed: bool = False
) -> list[Event]:
    """One run beat sent of `entry` at `sent` (due at `due`), run to success or failure just after."""
    events = finished_task(task_id, sent, 0.5, name=name)
    events[0].schedule = ScheduleRun(entry=entry, due=due, next_at=None, missed=missed)
    if failed:
        events[-1] = event("failed", task_id, sent + 2, name=name, root_id=task_id, retries=0,
                           exception="RuntimeError('no data for the report')")  # fmt: skip
    return events


def test_schedules_page_strip_banner_and_overview(stack: Stack, page: Page, page_watch: PageWatch) -> None:
    run = uuid.uuid4().hex[:6]
    beat = f"celerybeat@e2e-{run}"
    now = time.time()
    start = now - 900
    sync_task, nightly_task = f"billing.sync_invoices_{run}", f"reports.nightly_{run}"
    schedules = [
        ScheduleInfo(name=SYNC, task=sync_task, schedule="every 60s", interval=60.0, next_at=now - 240),
        ScheduleInfo(
            name=NIGHTLY,
            task=nightly_task,
            schedule="crontab(0 4 * * *)",
            interval=86400.0,
            next_at=now + 3600,
        ),
    ]
    events = [event("worker.online", hostname=beat, pid=1, info={"role": "beat"}, heartbeat_interval=15.0,
                    ts=start, schedules=schedules)]  # fmt: skip
    sync_ids = []
    sent = start + 5
    for k in range(9):
        # Run 4 came after 2 runs were missed (beat restarted), went out 90 s after it was due; run 6 failed.
        missed = 2 if k == 4 else 0
        sent += 60 * (1 + missed)
        due = sent - 90 if k == 4 else sent - 0.01
        task_id = f"sync-{run}-{k}"
        sync_ids.append(task_id)
        events += run_events(task_id, sync_task, SYNC, sent, due, missed, failed=k == 6)
    nightly_id = f"nightly-{run}"
    events += run_events(nightly_id, nightly_task, NIGHTLY, start + 30, start + 30, failed=True)
    events.append(event("worker.offline", hostname=beat, pid=1, ts=now - 300))
    publish(stack, events)

    body = wait_for(
        lambda: stack.api("/schedules"),
        30,
        "both entries, with their runs, and beat down",
        until=lambda b: len(b["items"]) == 2 and b["beat_down"] and sum(i["runs"] for i in b["items"]) == 10,
    )
    sync = {i["name"]: i for i in body["items"]}[SYNC]
    assert sync["late"] is True
    assert sync["missed"] == 2 + sync["missed_now"]
    assert sync["missed_now"] >= 2
    assert sync["failures"] == 1

    page.goto(stack.url + "/")
    figure = page.get_by_test_id("fig-schedules")
    expect(figure).to_contain_text("beat is down")
    screenshot(page, "overview-schedules-dark")
    figure.click()
    expect(page).to_have_url(re.compile(r"/schedules$"))
    expect(page.get_by_role("link", name="Schedules")).to_have_attribute("aria-current", "page")
    banner = page.get_by_test_id("beat-down")
    expect(banner).to_contain_text("Beat is down")
    row = page.get_by_test_id("schedules-table").locator(f'tr[data-entry="{SYNC}"]')
    expect(row).to_have_attribute("data-late", "true")
    expect(row).to_contain_text("beat down")
    expect(row.get_by_test_id("overdue")).to_contain_text("overdue")
    strip = row.get_by_test_id("strip")
    expect(strip.locator('a[data-mark="ok"]')).to_have_count(7)
    expect(strip.locator('a[data-mark="late"]')).to_have_count(1)
    expect(strip.locator('a[data-mark="failed"]')).to_have_count(1)
    expect(strip.locator('[data-mark="missed"]')).to_have_count(2 + min(sync["missed_now"], 4))
    expect(row.get_by_test_id("missed")).to_have_text(str(sync["missed"]))
    # An entry name is text, never markup.
    nightly_row = page.get_by_test_id("schedules-table").locator("tr[data-entry]").filter(has_text="nightly")
    expect(nightly_row).to_contain_text(NIGHTLY)
    expect(nightly_row.locator("b")).to_have_count(0)
    expect(nightly_row).to_contain_text("beat down")
    screenshot(page, "schedules-beat-down-dark")
    page.get_by_test_id("theme-toggle").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    screenshot(page, "schedules-beat-down-light")

    # A run in the strip opens its task; the runs count opens the task list of the entry's task.
    strip.locator('a[data-mark="failed"]').click()
    expect(page).to_have_url(re.compile(f"/tasks/{sync_ids[6]}$"))
    page.go_back()
    row.get_by_test_id("runs").click()
    expect(page).to_have_url(re.compile(r"/tasks\?name=billing\.sync_invoices_"))
    page.go_back()

    # Beat back: it announces its schedule again, the banner goes, the entry is on time.
    back = [ScheduleInfo(name=i.name, task=i.task, schedule=i.schedule, interval=i.interval,
                         next_at=time.time() + 60) for i in schedules]  # fmt: skip
    publish(stack, [event("worker.online", hostname=beat, pid=2, info={"role": "beat"},
                          heartbeat_interval=15.0, schedules=back)])  # fmt: skip
    expect(page.get_by_test_id("beat-down")).to_have_count(0, timeout=20_000)
    expect(row).to_have_attribute("data-late", "false")
    expect(row).to_contain_text("on time")
    # It came back with a fresh schedule: the overdue runs it gave up on stay counted as missed.
    assert {i["name"]: i for i in stack.api("/schedules")["items"]}[SYNC]["missed"] >= sync["missed"]
    screenshot(page, "schedules-light")
    assert page_watch.dialogs == []
    assert [e for e in page_watch.errors if not ID_PROBE_404.search(e)] == []
