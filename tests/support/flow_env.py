"""A tracked canvas app, a real worker and a served server over one store and one transport: what the
flow-graph tests (tests/integration/test_flow_graphs.py, test_plan.py) read graphs from over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_flow
from celery_flow.server import create_app
from tests.support.canvas_app import make_app
from tests.support.moto_server import CELERY_SQS_OPTIONS
from tests.support.server_helpers import serving
from tests.support.server_tasks import register_launcher
from tests.support.wait import wait_for

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED", "REJECTED", "NOT_RUN"}


@dataclass
class Env:
    app: Celery
    api: httpx.Client

    def task(self, name: str) -> Any:
        return self.app.tasks[f"t.{name}"]

    def graph(self, root_id: str, ready: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The flow graph once `ready(graph)` holds."""

        def check() -> dict[str, Any] | None:
            resp = self.api.get(f"/api/flows/{root_id}")
            if resp.status_code == 404:
                return None
            resp.raise_for_status()
            graph: dict[str, Any] = resp.json()
            return graph if ready(graph) else None

        return wait_for(check, 30, f"flow {root_id}: {what}")

    def flow(self, root_id: str, count: int, terminal: bool = True) -> dict[str, Any]:
        """The flow graph once it has `count` nodes, all in a final state (unless terminal=False)."""

        def ready(graph: dict[str, Any]) -> bool:
            nodes = graph["nodes"]
            return len(nodes) >= count and (not terminal or all(n["state"] in TERMINAL for n in nodes))

        return self.graph(root_id, ready, f"{count} finished nodes")

    def launch(self, shape: str) -> tuple[str, dict[str, Any]]:
        r = self.app.tasks["st.launch"].delay(shape)
        return r.id, r.get(timeout=20)


@contextmanager
def flow_env(store_url: str, flow_url: str, celery_url: str, backend_url: str | None = None) -> Iterator[Env]:
    """Serve a server on `store_url` consuming `flow_url`, with a solo worker of the canvas app (Celery
    on `celery_url`, results in `backend_url`, by default the broker) tracked to it."""
    prefix = f"cft_{uuid.uuid4().hex[:8]}"
    server = create_app(broker_url=flow_url, store=store_url, prefix=prefix)
    app = make_app(celery_url, backend_url or celery_url, flow_url, prefix, queue=f"q_{prefix}")
    if celery_url.startswith("sqs://"):
        app.conf.broker_transport_options = CELERY_SQS_OPTIONS
    register_launcher(app)
    try:
        with (
            serving(server) as url,
            httpx.Client(base_url=url, timeout=10) as api,
            start_worker(
                app,
                pool="solo",
                concurrency=1,
                perform_ping_check=False,
                loglevel="ERROR",
                shutdown_timeout=10,
            ),
        ):
            yield Env(app, api)
    finally:
        celery_flow.shutdown(app)


def env_for(param: str, request: Any, redis_url: str, tmp: Path) -> Iterator[Env]:
    """The fixture body for a `store-transport` parameter ("sqlite-redis", "postgresql-amqp", ...). On
    "sqs", Celery itself runs on SQS too (results in Redis: SQS cannot hold them)."""
    store, transport = param.split("-")
    store_url = (
        f"sqlite:///{tmp / 'flow.db'}" if store == "sqlite" else str(request.getfixturevalue("pg_url"))
    )
    if transport == "sqs":
        sqs_url = str(request.getfixturevalue("sqs_url"))
        with flow_env(store_url, sqs_url, sqs_url, backend_url=redis_url) as env:
            yield env
        return
    flow_url = redis_url if transport == "redis" else str(request.getfixturevalue("amqp_url"))
    with flow_env(store_url, flow_url, redis_url) as env:
        yield env
