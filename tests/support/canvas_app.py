"""A Celery app with the tasks every test uses, importable by a prefork subprocess worker.

In-process tests call `make_app(...)`; a subprocess worker runs
`celery -A tests.support.canvas_app worker ...` with these environment variables:

- CFT_BROKER_URL / CFT_BACKEND_URL: Celery's own broker and result backend
- CFT_FLOW_URL / CFT_FLOW_PREFIX: when set, `celery_flow.init(app, transport_url, prefix)` is called
- CFT_ACKS_LATE: seconds; when set, tasks are acknowledged after they ran (`task_acks_late`), and Redis
  hands an unacknowledged message out again after that many seconds (its `visibility_timeout`, checked
  every second): what redelivers the task of a killed worker
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

__all__ = ["app", "make_app"]


def make_app(
    broker_url: str,
    backend_url: str | None = None,
    flow_transport_url: str | None = None,
    prefix: str | None = None,
    main: str = "canvas_app",
    queue: str | None = None,
    **flow_options: Any,
) -> Celery:
    """A fresh app with every test task registered; tracked when `flow_transport_url` is given."""
    celery_app = Celery(main, broker=broker_url, backend=backend_url or broker_url, set_as_current=False)
    celery_app.conf.update(
        task_acks_late=False,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        result_expires=600,
        worker_hijack_root_logger=False,
        broker_transport_options={"visibility_timeout": 60},
    )
    if queue:  # a queue of its own, so a test never sees another test's leftover messages
        celery_app.conf.task_default_queue = queue
    _register(celery_app)
    if flow_transport_url:
        import celery_flow

        celery_flow.init(celery_app, transport_url=flow_transport_url, prefix=prefix, **flow_options)
    return celery_app


def _register(a: Celery) -> None:
    @a.task(shared=False, name="t.add")
    def add(x: int, y: int) -> int:
        """Add two numbers."""
        return x + y

    @a.task(shared=False, name="t.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @a.task(shared=False, name="t.xsum")
    def xsum(numbers: list[int]) -> int:
        return sum(numbers)

    @a.task(shared=False, name="t.noop")
    def noop() -> None:
        return None

    @a.task(shared=False, name="t.fail")
    def fail(msg: str = "boom") -> None:
        raise ValueError(msg)

    @a.task(shared=False, name="t.flaky", bind=True, max_retries=3)
    def flaky(self: Task, succeed_on: int = 2, countdown: float = 0.1) -> int:
        """Fail until attempt number `succeed_on` (0-based), retrying with a countdown."""
        if self.request.retries < succeed_on:
            raise self.retry(exc=RuntimeError(f"attempt {self.request.retries} failed"), countdown=countdown)
        return int(self.request.retries)

    @a.task(shared=False, name="t.spawn", bind=True)
    def spawn(self: Task, n: int = 2) -> list[str]:
        """Call .delay() from inside a task: children of this task."""
        return [add.delay(i, i).id for i in range(n)]

    @a.task(shared=False, name="t.spawn_nested", bind=True)
    def spawn_nested(self: Task, depth: int = 2) -> str:
        if depth <= 0:
            return noop.delay().id
        return spawn_nested.delay(depth - 1).id

    @a.task(shared=False, name="t.replaced", bind=True)
    def replaced(self: Task, x: int = 1) -> Any:
        return self.replace(add.s(x, 100))

    @a.task(shared=False, name="t.slow")
    def slow(seconds: float = 1.0) -> float:
        time.sleep(seconds)
        return seconds

    @a.task(shared=False, name="t.hold")
    def hold(key: str, fail: bool = False, timeout: float = 120.0) -> str:
        """Run until the test sets `key` in the result backend's Redis (at most `timeout` s), then
        succeed, or fail when `fail`: a branch that ends when the test says so."""
        deadline = time.monotonic() + timeout
        while not a.backend.client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        if fail:
            raise ValueError(f"{key} released to fail")
        return key

    @a.task(shared=False, name="t.echo")
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @a.task(shared=False, name="t.errback")
    def errback(task_id: str) -> str:
        """Error callback taking the failed task's id (sent as its own task)."""
        return f"handled {task_id}"

    @a.task(shared=False, name="t.on_error")
    def on_error(request: Any, exc: Any, traceback: Any) -> str:
        """Error callback Celery calls inside the worker (it takes the request): never sent."""
        return f"handled {request.id}"

    @a.task(shared=False, name="t.reject", bind=True, acks_late=True)
    def reject(self: Task, requeue: bool = False) -> None:
        raise Reject("not today", requeue=requeue)

    @a.task(shared=False, name="t.trace_id")
    def trace_id() -> str | None:
        import celery_flow

        return celery_flow.current_trace_id()

    @a.task(shared=False, name="t.spawn_traced", bind=True)
    def spawn_traced(self: Task) -> str:
        """Spawn a child that reports the trace id it sees."""
        return str(trace_id.delay().id)


def _from_env() -> Celery:
    broker = os.environ.get("CFT_BROKER_URL", "redis://127.0.0.1:6379/15")
    celery_app = make_app(
        broker,
        os.environ.get("CFT_BACKEND_URL") or broker,
        os.environ.get("CFT_FLOW_URL") or None,
        os.environ.get("CFT_FLOW_PREFIX") or None,
        queue=os.environ.get("CFT_QUEUE") or None,
    )
    acks_late = os.environ.get("CFT_ACKS_LATE")
    if acks_late:
        celery_app.conf.task_acks_late = True
        celery_app.conf.broker_transport_options = {
            "visibility_timeout": float(acks_late),
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    return celery_app


app = _from_env()
