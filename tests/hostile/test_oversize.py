"""Oversize input, end to end: a real task with megabytes of arguments and result, and a raw stream entry
larger than the consumer accepts.

- The library caps what it captures (max_value_size, 4,096 characters by default) with a visible marker:
  the UI shows `…[truncated N chars]` / `[truncated N more keys]`, never megabytes, and every event on
  the stream stays small. The task itself gets its full arguments and returns its full result.
- A raw entry above MAX_EVENT_BYTES (written by something that is not our library) is refused by the
  consumer, counted as `oversize` in /api/health and /metrics, and the stream behind it keeps flowing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import redis

from celery_flow.events import MAX_EVENT_BYTES, encode
from celery_flow.server import create_app
from celery_flow.settings import DEFAULT_MAX_VALUE_SIZE
from tests.support.events import event
from tests.support.server_helpers import serving
from tests.support.wait import wait_for
from tests.support.worker import tracked_worker

BIG = 3_000_000  # characters: ~700x the cap


def test_huge_args_and_result_are_truncated_visibly_and_oversize_entries_refused(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path
) -> None:
    stream = f"{unique_prefix}:events"
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'flow.db'}", prefix=unique_prefix)
    try:
        with (
            serving(app) as url,
            httpx.Client(base_url=url, timeout=10) as api,
            tracked_worker(redis_url, redis_url, unique_prefix) as t,
        ):
            huge = t.task("add").delay("a" * BIG, "b")
            many_keys = t.task("xsum").delay([1] * 200_000)
            assert len(huge.get(timeout=60)) == BIG + 1  # the task itself saw and returned everything
            assert many_keys.get(timeout=60) == 200_000

            # Something else writes an entry far over the limit into our stream, then a normal task runs.
            fat = event("sent", "fat-" + uuid.uuid4().hex, 1.0, args=["z" * (MAX_EVENT_BYTES + 10)])
            redis_client.xadd(stream, {"e": encode(fat)})
            after = t.task("add").delay(2, 3)
            assert after.get(timeout=30) == 5

            detail = wait_for(lambda: (d := api.get(f"/api/tasks/{huge.id}").json()).get("state") == "SUCCESS"
                              and d, 30, "the huge task to be stored")  # fmt: skip
            shown_arg, shown_result = detail["args"][0], detail["result"]
            assert "truncated" in shown_arg, shown_arg[-80:]
            assert len(shown_arg) < 2 * DEFAULT_MAX_VALUE_SIZE
            assert "truncated" in shown_result
            assert len(shown_result) < 2 * DEFAULT_MAX_VALUE_SIZE
            listed = wait_for(lambda: api.get(f"/api/tasks/{many_keys.id}").json(), 30, "the list task")
            assert "truncated" in json.dumps(listed["args"])
            assert len(json.dumps(listed["args"])) < 4 * DEFAULT_MAX_VALUE_SIZE

            wait_for(lambda: api.get(f"/api/tasks/{after.id}").json().get("state") == "SUCCESS", 30,
                     "the task after the oversize entry")  # fmt: skip
            assert api.get(f"/api/tasks/{fat.task_id}").status_code == 404
            health = wait_for(lambda: (h := api.get("/api/health").json())["rejected"].get("oversize") and h,
                              15, "the oversize entry to be counted")  # fmt: skip
            assert health["rejected"] == {"oversize": 1}
            assert 'celery_flow_events_rejected_total{kind="oversize"} 1.0' in api.get("/metrics").text

        # Everything the library itself wrote stayed small.
        # (Library batches arrive as one entry in field `b`, one event a line; single events in `e`.)
        sizes = [
            len(event)
            for _, fields in redis_client.xrange(stream)
            for event in (fields[b"b"].split(b"\n") if b"b" in fields else [fields[b"e"]])
        ]
        library = [s for s in sizes if s <= MAX_EVENT_BYTES]
        assert len(library) == len(sizes) - 1
        assert max(library) < 8 * DEFAULT_MAX_VALUE_SIZE
    finally:
        redis_client.delete(stream)
