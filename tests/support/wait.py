"""The one way tests wait: poll a check until it holds, or fail at a deadline naming what never came."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

import httpx

__all__ = ["NOT_UP_YET", "WaitTimeout", "wait_for", "wait_indexed"]

T = TypeVar("T")

# What a check may raise while the thing it polls is not up yet (a server still starting, a body without
# the key yet): by default the poll goes on, and the error is reported if the deadline passes.
NOT_UP_YET: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError, AssertionError, KeyError)


class WaitTimeout(AssertionError):
    """What `wait_for` raises at its deadline: a test failure, which a caller may catch to add context."""


@overload
def wait_for(
    check: Callable[[], T | None],
    timeout: float = ...,
    what: str = ...,
    *,
    until: None = None,
    interval: float = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
def wait_for(
    check: Callable[[], T],
    timeout: float = ...,
    what: str = ...,
    *,
    until: Callable[[T], object],
    interval: float = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    until: Callable[[T], object] | None = None,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = NOT_UP_YET,
) -> T:
    """Call `check` every `interval` seconds and return its value once it is truthy (or, given
    `until`, once it is not None and `until(value)` holds). After `timeout` seconds raise WaitTimeout
    naming `what` and the last value seen. An exception in `retry_on` counts as "not yet"; any other
    propagates at once."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except retry_on as exc:
            last = exc
        else:
            last = value
            if value is not None and (until(value) if until is not None else value):
                return value
        if time.monotonic() >= deadline:
            seen = repr(last)
            seen = seen if len(seen) <= 1000 else seen[:1000] + "..."
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what} (last seen: {seen})")
        time.sleep(interval)


def wait_indexed(health: Callable[[], dict[str, Any]], since: float, timeout: float = 30.0) -> float:
    """Wait until a health report (`health()`: GET /api/health's JSON) made after `since` shows the search
    index caught up (store.search_lag 0: store/search.py indexes behind the fold); return its time."""

    def check() -> float | None:
        report = health()
        caught_up = report["store"]["search_lag"] == 0 and report["checked_at"] > since
        return float(report["checked_at"]) if caught_up else None

    return wait_for(check, timeout, "the search index caught up")


def tasks_finished(api: httpx.Client, ids: list[str]) -> bool:
    """Whether every task in `ids` has finished (SUCCESS or FAILURE), asked of a served server's API."""
    for task_id in ids:
        resp = api.get(f"/api/tasks/{task_id}")
        if resp.status_code != 200 or resp.json()["state"] not in ("SUCCESS", "FAILURE"):
            return False
    return True
