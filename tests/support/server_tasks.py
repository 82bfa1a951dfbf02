"""Celery pieces for server tests that the canvas helper (tests/support/canvas_app.py) lacks.

- `app`: a small app for `celery -A tests.support.server_tasks flow ...`; its broker comes from
  SERVER_TASKS_BROKER so a test can point it at a real or a deliberately unreachable broker.
- `register_launcher(app)`: a `st.launch` task that starts a named canvas from inside a task. Celery
  gives every member of a group/chord started from outside a task its own root id; started from a task
  (as batch jobs usually are) the whole canvas is one flow rooted at the launcher, which is what the
  flow-graph tests draw. It returns the ids a test needs to check the graph.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task, chain, chord, group

app = Celery("server_tasks", broker=os.environ.get("SERVER_TASKS_BROKER", "redis://127.0.0.1:6379/0"))


@app.task(name="server_tasks.add")
def add(x: int, y: int) -> int:
    return x + y


def register_launcher(a: Celery) -> None:
    @a.task(shared=False, name="st.launch", bind=True)
    def launch(self: Task, shape: str) -> dict[str, Any]:
        t = a.tasks
        add_, mul, xsum = t["t.add"], t["t.mul"], t["t.xsum"]
        if shape == "group":
            res = group(add_.s(i, i) for i in range(3)).apply_async()
            return {"members": [r.id for r in res.results], "group": res.id}
        if shape == "chord":
            res = chord([add_.s(i, i) for i in range(3)], xsum.s()).apply_async()
            return {"members": [r.id for r in res.parent.results], "callback": res.id}
        if shape == "chord_of_chains":
            res = chord(
                [chain(add_.s(1, 1), mul.s(2)), chain(add_.s(2, 2), mul.s(3))], xsum.s()
            ).apply_async()
            tails = [r.id for r in res.parent.results]
            heads = [r.parent.id for r in res.parent.results]
            return {"heads": heads, "tails": tails, "callback": res.id}
        if shape == "nested_chords":
            inner = chord([add_.si(2, 2), add_.si(3, 3)], xsum.s())
            res = chord([add_.si(1, 1), inner], xsum.s()).apply_async()
            simple, inner_callback = (r.id for r in res.parent.results)
            return {"simple": simple, "inner_callback": inner_callback, "callback": res.id}
        raise ValueError(f"unknown shape {shape!r}")
