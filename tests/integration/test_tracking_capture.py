"""Scrubbing and size capping as a user sees them: through a real worker, on both transports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.worker import Tracked, tracked_worker

from celery_flow.events import Event


@pytest.fixture
def tracked(redis_url: str, transport_url: str) -> Iterator[Tracked]:
    with tracked_worker(redis_url, transport_url, additional_sensitive_keys={"ssn"}) as t:
        yield t


def final(events: list[Event], task_id: str, type_: str) -> Event:
    return next(e for e in events if e.task_id == task_id and e.type == type_)


def test_sensitive_values_are_filtered_and_ordinary_ones_kept(tracked: Tracked) -> None:
    r = tracked.task("echo").delay(
        "visible",
        password="hunter2",
        passenger_count=3,
        tokenizer="bert",
        author="ann",
        ssn="123-45-6789",
        nested={"Authorization": "Bearer abc", "items": [{"db_password": "x", "X-Api-Key": "k"}]},
    )
    r.get(timeout=10)
    events = tracked.log.wait_for(lambda ev: any(e.task_id == r.id and e.type == "succeeded" for e in ev))
    kwargs = final(events, r.id, "sent").kwargs
    assert kwargs["password"] == "[Filtered]"
    assert kwargs["ssn"] == "[Filtered]"  # additional_sensitive_keys
    assert kwargs["nested"]["Authorization"] == "[Filtered]"
    assert kwargs["nested"]["items"] == [{"db_password": "[Filtered]", "X-Api-Key": "[Filtered]"}]
    assert kwargs["passenger_count"] == 3
    assert kwargs["tokenizer"] == "bert"
    assert kwargs["author"] == "ann"
    assert final(events, r.id, "sent").args == ["visible"]
    # the result echoes the kwargs: scrubbed the same way
    result = final(events, r.id, "succeeded").result
    assert result["kwargs"]["password"] == "[Filtered]"
    assert result["kwargs"]["passenger_count"] == 3
    raw = b"".join(e.__repr__().encode() for e in events)
    assert b"hunter2" not in raw
    assert b"123-45-6789" not in raw


def test_exception_message_and_traceback_are_scrubbed(tracked: Tracked) -> None:
    r = tracked.task("fail").delay("cannot connect: password=hunter2 Authorization: Bearer sekrit.tok")
    with pytest.raises(ValueError, match="hunter2"):  # Celery's own result is untouched
        r.get(timeout=10)
    events = tracked.log.wait_for(lambda ev: any(e.task_id == r.id and e.type == "failed" for e in ev))
    failed = final(events, r.id, "failed")
    assert failed.exception == (
        "ValueError: cannot connect: password=[Filtered] Authorization: Bearer [Filtered]"
    )
    assert failed.traceback is not None
    assert "hunter2" not in failed.traceback
    assert "sekrit" not in failed.traceback
    assert "password=[Filtered]" in failed.traceback


def test_huge_and_odd_values_are_capped_with_markers(tracked: Tracked) -> None:
    r = tracked.task("echo").delay("x" * 100_000, list(range(5000)))
    r.get(timeout=10)
    events = tracked.log.wait_for(lambda ev: any(e.task_id == r.id and e.type == "succeeded" for e in ev))
    args = final(events, r.id, "sent").args
    assert args[0].startswith("xxxx")
    assert "…[truncated " in args[0]
    assert len(args[0]) < 5000
    result = final(events, r.id, "succeeded").result
    assert "…[truncated " in str(result)


def test_capture_can_be_switched_off(redis_url: str) -> None:
    with tracked_worker(redis_url, redis_url, capture_args=False, capture_result=False) as t:
        r = t.task("add").delay(1, 2)
        assert r.get(timeout=10) == 3
        events = t.log.wait_for(lambda ev: any(e.task_id == r.id and e.type == "succeeded" for e in ev))
        assert final(events, r.id, "sent").args is None
        assert final(events, r.id, "succeeded").result is None
