"""A small Celery app for server tests that need `celery -A ...` or tasks the canvas helper lacks.

The broker comes from SERVER_TASKS_BROKER so a test can point `celery -A tests.support.server_tasks flow`
at a real or a deliberately unreachable broker.
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("server_tasks", broker=os.environ.get("SERVER_TASKS_BROKER", "redis://127.0.0.1:6379/0"))


@app.task(name="server_tasks.add")
def add(x: int, y: int) -> int:
    return x + y
