"""Run tracked Celery workers for tests (in-process, or a prefork subprocess) and read their events back."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_flow
from tests.support.canvas_app import make_app
from tests.support.events import EventLog
from tests.support.private_process import terminate
from tests.support.wait import wait_for

__all__ = ["Tracked", "prefork_worker", "revoke_confirmed", "tracked_worker"]


@dataclass
class Tracked:
    app: Celery
    log: EventLog
    prefix: str
    flow_url: str

    def task(self, name: str) -> Any:
        return self.app.tasks[f"t.{name}"]


@contextmanager
def tracked_worker(
    celery_url: str,
    flow_url: str,
    prefix: str | None = None,
    pool: str = "solo",
    worker: bool = True,
    **flow_options: Any,
) -> Iterator[Tracked]:
    """A canvas app tracked into (flow_url, prefix), with a started worker on its own queue."""
    prefix = prefix or f"cft_{uuid.uuid4().hex[:8]}"
    app = make_app(celery_url, celery_url, flow_url, prefix, queue=f"q_{prefix}", **flow_options)
    log = EventLog(flow_url, prefix)
    try:
        if worker:
            with start_worker(
                app, pool=pool, concurrency=1, perform_ping_check=False, loglevel="ERROR", shutdown_timeout=10
            ):
                yield Tracked(app, log, prefix, flow_url)
        else:
            yield Tracked(app, log, prefix, flow_url)
    finally:
        celery_flow.shutdown(app)
        log.close()


@contextmanager
def prefork_worker(
    app: str, nodename: str, env: dict[str, str], cwd: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`celery -A <app> worker --pool prefork -c 2 -n <nodename>` (and `options`) in a subprocess
    started in `cwd` with `env`, its warnings on stderr; afterwards SIGTERM (a warm shutdown), then
    SIGKILL if it still runs 20 s later."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork", "-c", "2",
         "-n", nodename, "--loglevel", "WARNING", *options],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        terminate(proc)


def revoke_confirmed(app: Celery, task_id: str, timeout: float = 15.0) -> None:
    """Revoke `task_id` and return once a worker has confirmed it. A worker that has only just started
    may not listen to broadcasts yet (the message is then lost, and a lone revoke times out with no
    reply); revoking again is harmless, so ask until one answers."""
    wait_for(
        lambda: app.control.revoke(task_id, reply=True, limit=1, timeout=1),
        timeout,
        f"a worker to confirm the revoke of {task_id}",
        interval=0,
        retry_on=(),
    )
