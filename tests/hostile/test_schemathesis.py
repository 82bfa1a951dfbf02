"""Schemathesis against the running server's own OpenAPI schema: no 500s, and responses conform to it.

The server is the real app under uvicorn (no consumer), on a SQLite store holding a canvas flow (chain,
chord, a retry, a failure with traceback) and a worker, so generated requests hit real rows as well as
unknown ids. Schemathesis generates valid and invalid query/path values from `/api/openapi.json` and checks
each response: never a server error, status codes, content types and bodies as documented.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from celery_flow.events import Event
from celery_flow.server import create_app
from celery_flow.store import open_store
from tests.support.events import event
from tests.support.server_helpers import serving

ROOT = uuid.uuid4().hex
TRACE = uuid.uuid4().hex


def _flow() -> list[Event]:
    """root -> chain(a, b) -> chord([c1, c2], d); a retried once; c2 failed."""
    ids = {k: uuid.uuid4().hex for k in ("a", "b", "c1", "c2", "d", "g")}
    out: list[Event] = []

    def task(
        task_id: str, name: str, parent: str | None, t: float, end: str = "succeeded", **extra: Any
    ) -> None:
        common: dict[str, Any] = {"name": name, "root_id": ROOT, "trace_id": TRACE}
        if parent:
            common["parent_id"] = parent
        for i, type_ in enumerate(("sent", "received", "started", end)):
            fields: dict[str, Any] = dict(common)
            if type_ == "sent":
                fields.update(extra, args=[1, "x"], kwargs={"k": "v"}, queue="celery")
            else:
                fields.update(hostname="celery@h", pid=42)
            if type_ == "failed":
                fields.update(
                    exception="ValueError('bad')", traceback="Traceback...\nValueError: bad", runtime=0.1
                )
            if type_ == "succeeded":
                fields.update(result={"ok": True}, runtime=0.1)
            out.append(event(type_, task_id, t + i * 0.01, **fields))

    task(ROOT, "app.root", None, 1_700_000_000.0)
    task(ids["a"], "app.a", ROOT, 1_700_000_001.0, links=[ids["b"]])
    out.append(event("retried", ids["a"], 1_700_000_001.02, name="app.a", exception="Retry in 1s", retries=0))
    task(ids["b"], "app.b", ids["a"], 1_700_000_002.0)
    task(ids["c1"], "app.c", ids["b"], 1_700_000_003.0, group_id=ids["g"], chord_id=ids["d"])
    task(ids["c2"], "app.c", ids["b"], 1_700_000_003.0, end="failed", group_id=ids["g"], chord_id=ids["d"])
    task(ids["d"], "app.d", ids["b"], 1_700_000_004.0)
    out.append(event("worker.online", ts=1_700_000_000.0, hostname="celery@h"))
    return out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("schemathesis") / "flow.db"
    store = open_store(f"sqlite:///{path}")
    store.apply(_flow())
    store.close()
    app = create_app(broker_url=None, store=f"sqlite:///{path}", embedded_consumer=False)
    with serving(app) as url:
        yield url


def test_api_never_500s_and_conforms_to_its_schema(api: str) -> None:
    # schemathesis' pytest plugin does not run under pytest 9 (Function._nodeid): drive it directly,
    # one Hypothesis run per operation of the schema the server publishes.
    schema = schemathesis.openapi.from_url(f"{api}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, [op.path for op in operations]

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            # Two rules OpenAPI cannot express, where "valid by the schema must be accepted" cannot apply:
            # a cursor is an opaque token (only a `next_cursor` the API handed out is valid), and
            # `until` must not be before `since`. Both give a documented 422, never a 500.
            query = case.query or {}
            since, until = query.get("since"), query.get("until")
            unexpressible = query.get("cursor") is not None or (
                isinstance(since, (int, float)) and isinstance(until, (int, float)) and until < since
            )
            excluded = [positive_data_acceptance] if unexpressible else []
            case.call_and_validate(base_url=api, excluded_checks=excluded)

        check()
