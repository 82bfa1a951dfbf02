"""Synthetic, realistic event streams for the benchmarks (and the store tests' bulk data).

Each flow is a root task that spawns a chain of two tasks and a chord of four with a callback, as a
Celery canvas would: 8 tasks, 32 events (sent, received, started, succeeded/failed), with lineage,
trace ids, hostnames, args/kwargs/results of a realistic size (kwargs with ids, an e-mail, a country
and a nested order, as the argument search finds them). Flows start at a steady rate and their
events are interleaved in time order, so one batch of a stream holds the middles of many tasks.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

from celery_flow.events import Event

NAMES = ("app.tasks.fetch", "app.tasks.parse", "app.tasks.store", "app.tasks.notify", "app.tasks.resize")
HOSTS = tuple(f"celery@worker{i}" for i in range(8))
TASKS_PER_FLOW = 8
# Customers the kwargs name (each of 1,000,000 tasks' customer_id is shared by ~10 tasks).
CUSTOMERS = 100_000
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL", "SE", "JP")
FIRST_NAMES = ("ada", "grace", "alan", "edsger", "barbara", "donald", "ken", "linus", "margaret", "john")
EVENTS_PER_FLOW = TASKS_PER_FLOW * 4


def _task_events(
    rng: random.Random,
    task_id: str,
    name: str,
    root: str,
    parent: str | None,
    trace: str,
    t: float,
    **lineage: Any,
) -> tuple[list[Event], float]:
    host = rng.choice(HOSTS)
    run = rng.uniform(0.001, 0.2)
    outcome = rng.random()
    failed, retried = outcome < 0.02, 0.02 <= outcome < 0.03
    ids: dict[str, Any] = {"task_id": task_id, "trace_id": trace, "retries": 0, "name": name}
    lineage_fields: dict[str, Any] = {"root_id": root, "parent_id": parent}
    worker: dict[str, Any] = {"hostname": host, "pid": 1001}

    def make(type_: str, ts: float, **fields: Any) -> Event:
        return Event(v=1, id=uuid.uuid4().hex, type=type_, ts=ts, **ids, **fields)  # type: ignore[arg-type]

    out = [
        make("sent", t, queue="celery", args=[rng.randrange(10**6), "s3://bucket/key/" + task_id[:8]],
             kwargs=_kwargs(rng), info={"producer": "web-1"}, **lineage_fields, **lineage),
        make("received", t + 0.002, **lineage_fields, **worker),
        make("started", t + 0.003, **lineage_fields, **worker),
    ]  # fmt: skip
    end = t + 0.003 + run
    if failed or retried:
        exception, tb = failure(rng, retried)
        kind = "retried" if retried else "failed"
        out.append(make(kind, end, runtime=run, exception=exception, traceback=tb, **worker))
    else:
        out.append(
            make("succeeded", end, runtime=run, result={"ok": True, "rows": rng.randrange(1000)}, **worker)
        )
    return out, end


# Distinct causes of the failures, the first far more frequent than the last (1/k), as in production.
CAUSES = 30
_EXCEPTIONS = (
    ("ValueError", "bad input {n} in row {m}"),
    ("KeyError", "'field_{n}'"),
    ("ConnectionError", "could not reach 'db-{n}' after {m} attempts"),
    ("TimeoutError", "timed out after {n}s waiting for job {id}"),
    ("RuntimeError", "job {id} failed with code {n}"),
)
_CELERY_FRAME = (
    '  File "/venv/lib/python3.11/site-packages/celery/app/trace.py", line 453, in trace_task\n'
    "    R = retval = fun(*args, **kwargs)\n"
)
_RETRY_FRAME = (
    '  File "/venv/lib/python3.11/site-packages/celery/app/task.py", line 963, in retry\n    raise ret\n'
)


def failure(rng: random.Random, retry: bool) -> tuple[str, str]:
    """The exception text and formatted traceback of one failure (or retry) of one of CAUSES causes."""
    k = rng.choices(range(CAUSES), weights=[1 / (i + 1) for i in range(CAUSES)])[0]
    exception_type, template = _EXCEPTIONS[k % len(_EXCEPTIONS)]
    message = template.format(n=rng.randrange(10**5), m=rng.randrange(100), id=uuid.uuid4().hex[:12])
    frames = "".join(
        f'  File "/srv/app/app/{module}.py", line {10 + 7 * i + k}, in {function}\n    {function}(payload)\n'
        for i, (module, function) in enumerate(
            (("tasks", f"task_{k % 5}"), ("steps", f"step_{k}"), ("clients", f"call_{k % 7}"))
        )
    )
    text = f"{exception_type}: {message}"
    if retry:
        text = f"Retry: Retry in 10s: {exception_type}({message!r})"
        frames += _RETRY_FRAME
    last = f"celery.exceptions.{text}" if retry else text
    tb = f"Traceback (most recent call last):\n{_CELERY_FRAME}{frames}{last}\n"
    return text, tb


def _kwargs(rng: random.Random) -> dict[str, Any]:
    """Keyword arguments as an application passes them: ids, an e-mail, a country, a nested order."""
    customer = rng.randrange(CUSTOMERS)
    return {
        "customer_id": customer,
        "email": f"{FIRST_NAMES[customer % len(FIRST_NAMES)]}.{customer}@example.com",
        "country": rng.choice(COUNTRIES),
        "order": {
            "id": rng.randrange(10**9),
            "items": [{"sku": f"SKU-{rng.randrange(5000)}", "qty": rng.randrange(1, 5)} for _ in range(2)],
        },
        "priority": "high",
    }


def flow_events(rng: random.Random, t0: float) -> list[Event]:
    """The 32 events of one flow starting at t0 (unsorted)."""
    root = uuid.uuid4().hex
    trace = uuid.uuid4().hex
    events, end = _task_events(rng, root, NAMES[0], root, None, trace, t0)
    # chain: parse -> store, spawned by the root
    a, b = uuid.uuid4().hex, uuid.uuid4().hex
    ev, end_a = _task_events(rng, a, NAMES[1], root, root, trace, end + 0.001, links=[b])
    events += ev
    ev, end_b = _task_events(rng, b, NAMES[2], root, a, trace, end_a + 0.001)
    events += ev
    # chord of four resize tasks and a notify callback
    callback = uuid.uuid4().hex
    group = uuid.uuid4().hex
    ends = []
    for _ in range(4):
        ev, e = _task_events(
            rng, uuid.uuid4().hex, NAMES[4], root, b, trace, end_b + 0.001, group_id=group, chord_id=callback
        )
        events += ev
        ends.append(e)
    ev, _ = _task_events(rng, callback, NAMES[3], root, b, trace, max(ends) + 0.001)
    events += ev
    return events


def stream(flows: int, seed: int = 1, rate: float = 2000.0, t0: float | None = None) -> list[Event]:
    """`flows` flows starting `rate` per second from t0, all events in time order."""
    import time

    rng = random.Random(seed)
    start = time.time() - flows / rate - 60 if t0 is None else t0
    events: list[Event] = []
    for i in range(flows):
        events += flow_events(rng, start + i / rate)
    events.sort(key=lambda e: e.ts)
    return events


def batches(events: list[Event], size: int) -> Iterator[list[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]
