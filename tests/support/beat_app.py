"""A Celery app with a beat schedule, for `celery -A tests.support.beat_app beat` in a subprocess and for
the worker that runs its tasks in the test's own process.

The subprocess reads CFT_BROKER_URL, CFT_FLOW_URL, CFT_FLOW_PREFIX, CFT_QUEUE and CFT_EVERY (seconds
between runs of each entry); tracking's heartbeat interval comes from CELERY_FLOW_HEARTBEAT_INTERVAL.
"""

from __future__ import annotations

import os

from celery import Celery

import celery_flow

__all__ = ["ENTRIES", "make_beat_app"]

# Entry name -> task name: one that succeeds, one that always fails.
ENTRIES = {"tick every 2s": "cft.tick", "boom every 2s": "cft.boom"}


def make_beat_app(broker_url: str, flow_url: str, prefix: str, queue: str, every: float) -> Celery:
    """An app whose beat sends each entry of ENTRIES every `every` seconds to `queue`, tracked."""
    app = Celery("beat_app", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        beat_schedule={name: {"task": task, "schedule": every} for name, task in ENTRIES.items()},
    )

    @app.task(name="cft.tick")
    def tick() -> str:
        return "tock"

    @app.task(name="cft.boom")
    def boom() -> None:
        raise RuntimeError("the nightly report found no data")

    celery_flow.init(app, transport_url=flow_url, prefix=prefix)
    return app


if os.environ.get("CFT_BROKER_URL"):
    app = make_beat_app(
        os.environ["CFT_BROKER_URL"],
        os.environ["CFT_FLOW_URL"],
        os.environ["CFT_FLOW_PREFIX"],
        os.environ["CFT_QUEUE"],
        float(os.environ.get("CFT_EVERY", "2")),
    )
