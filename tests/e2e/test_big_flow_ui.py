"""The flow page of a 100,000-member chord: the server's collapsed node drawn with its counts and
percentiles, "show more" paging members in from the members endpoint, no console errors.

The chord is the session's `big_flow` (tests/support/bigflow.py: folded once from the real Redis stream
by a real `celery-flow consume`); the real server serves it to Debian's Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from tests.e2e.conftest import PageWatch, screenshot
from tests.support.bigflow import BIG_FAIL_EVERY, BIG_MEMBERS, FoldedFlow
from tests.support.server_helpers import serving

from celery_flow.server import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big_url(big_flow: FoldedFlow, built_ui: Path) -> Iterator[str]:
    with serving(create_app(store=big_flow.store_url, embedded_consumer=False)) as url:
        yield url


def test_a_100000_task_flow_draws_collapsed_and_pages_members_in(
    big_flow: FoldedFlow, big_url: str, page: Page, page_watch: PageWatch
) -> None:
    chord = big_flow.chord
    started = time.perf_counter()
    page.goto(f"{big_url}/flows/{chord.root_id}")
    expect(page.get_by_test_id("graph")).to_have_attribute("data-ready", "true", timeout=60_000)
    print(f"\n100,000-task flow: graph ready in the browser after {time.perf_counter() - started:.2f} s")
    cluster = page.get_by_test_id("collapsed-fetch")
    failures = BIG_MEMBERS // BIG_FAIL_EVERY
    # The listed members (failures first) are a fan-out of their own the page collapses as ever.
    expect(page.get_by_test_id("cluster-fetch")).to_contain_text(f"{failures} failure")
    listed = page.locator('[data-testid^="node-"]').count()
    # The members not sent all succeeded: each failure is drawn on its own.
    expect(cluster).to_contain_text("success")
    expect(cluster).not_to_contain_text("fail")
    expect(cluster.get_by_test_id("collapsed-runtime")).to_contain_text("p95")
    expect(page.get_by_test_id("container-chord")).to_contain_text("chord · 100,000")
    assert listed == 2  # the root and the callback
    screenshot(page, "big-flow")

    listed_ids = set(httpx.get(f"{big_url}/api/flows/{chord.root_id}").json()["collapsed"][0]["listed"])
    hidden = BIG_MEMBERS - len(listed_ids)
    expect(cluster).to_contain_text(f"\u00d7{hidden:,}")
    cluster.click()
    # The 100 slowest members paged in from the members endpoint (the slowest few were listed already):
    # the collapsed node stands for that many fewer.
    page_one = httpx.get(
        f"{big_url}/api/flows/{chord.root_id}/groups/{chord.group_id}/members", params={"sort": "slowest"}
    ).json()["items"]
    new = len({m["task_id"] for m in page_one} - listed_ids)
    assert 90 <= new < 100
    expect(cluster).to_contain_text(f"\u00d7{hidden - new:,}", timeout=30_000)
    # The timeline pages the next members in the same way.
    more = page.get_by_test_id("timeline-more")
    expect(more).to_contain_text(f"+{hidden - new:,} fetch not loaded")
    more.click()
    expect(cluster).not_to_contain_text(f"\u00d7{hidden - new:,}", timeout=30_000)
    screenshot(page, "big-flow-more")
    assert page_watch.errors == []
    assert page_watch.dialogs == []
