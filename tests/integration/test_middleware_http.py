"""The trace-id middlewares over real HTTP, publishing to a real Celery worker through real Redis.

A FastAPI app behind uvicorn (ASGI) and a plain WSGI app behind wsgiref each publish a task that spawns
a child; every event of both tasks, as read back through celery-flow's transport (Redis Streams and
RabbitMQ), must carry the trace id the request brought (or the one the middleware generated and echoed).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi import FastAPI
from tests.support.server_helpers import serving
from tests.support.wait import WaitTimeout, wait_for

import celery_flow
from celery_flow.events import Event, decode
from celery_flow.server.app import create_app
from celery_flow.tracking.middleware import (
    DEFAULT_RESPONSE_HEADER,
    CeleryFlowTraceMiddleware,
    CeleryFlowWSGIMiddleware,
)
from celery_flow.tracking.trace import current_trace_id
from celery_flow.transport import from_url
from celery_flow.transport.base import Subscription

pytestmark = pytest.mark.timeout(120)

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


@dataclass
class Env:
    app: Celery
    publish: Callable[[], str]
    subscription: Subscription
    transport_url: str
    prefix: str
    seen: list[Event] = field(default_factory=list)


@pytest.fixture(scope="module", params=["redis", "amqp"])
def env(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Env]:
    """A Celery app (broker: Redis) tracked by celery-flow over Redis Streams or RabbitMQ, with a worker."""
    transport_url = str(request.getfixturevalue(f"{request.param}_url"))
    run = uuid.uuid4().hex[:8]
    prefix = f"cft_mw_{run}"
    app = Celery(f"mw_{run}", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=f"mw_{run}",
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
    )

    @app.task(name=f"mw_{run}.child")
    def child(n: int) -> int:
        return n * 2

    @app.task(name=f"mw_{run}.place_order")
    def place_order(n: int) -> int:
        child.delay(n)
        return n

    def publish() -> str:
        return str(place_order.delay(21).id)

    # Subscribe first: a RabbitMQ queue only receives what is published after it exists.
    transport = from_url(transport_url, prefix=prefix)
    subscription = transport.subscribe("mw_test", "reader")
    celery_flow.init(app, transport_url=transport_url, prefix=prefix)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield Env(
                app=app,
                publish=publish,
                subscription=subscription,
                transport_url=transport_url,
                prefix=prefix,
            )
    finally:
        celery_flow.shutdown(app)
        subscription.close()
        transport.close()


def _events(env: Env) -> list[Event]:
    """Every event published so far (read through celery-flow's own transport, as the server does)."""
    while True:
        batch = env.subscription.read(1000, 0.1)
        if not batch:
            return env.seen
        env.seen.extend(decode(message.data) for message in batch)
        env.subscription.ack([message.id for message in batch])


def _family_events(env: Env, task_id: str, timeout: float = 30.0) -> dict[str, list[Event]]:
    """Events of the task and of the child it spawned, once both have succeeded."""

    def family_done() -> dict[str, list[Event]] | None:
        events = _events(env)
        child_ids = {e.task_id for e in events if e.parent_id == task_id and e.task_id != task_id}
        family = {task_id, *child_ids}
        done = {e.task_id for e in events if e.type == "succeeded" and e.task_id in family}
        if child_ids and done == family:
            return {tid: [e for e in events if e.task_id == tid] for tid in family}
        return None

    try:
        return wait_for(family_done, timeout, f"task {task_id} and its child to succeed", retry_on=())
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}; events: {env.seen}") from None


def _assert_traced(env: Env, task_id: str, trace_id: str) -> None:
    family = _family_events(env, task_id)
    assert len(family) == 2
    for tid, events in family.items():
        types = {e.type for e in events}
        assert {"sent", "received", "started", "succeeded"} <= types, (tid, types)
        assert {e.trace_id for e in events} == {trace_id}, (tid, [(e.type, e.trace_id) for e in events])


# ---- ASGI: FastAPI behind uvicorn ------------------------------------------------------------------


@pytest.fixture(scope="module")
def asgi_url(env: Env) -> Iterator[str]:
    api = FastAPI()
    api.add_middleware(CeleryFlowTraceMiddleware)

    @api.post("/orders")
    def create_order() -> dict[str, Any]:  # sync endpoint: runs in the thread pool
        return {"task_id": env.publish(), "trace_id": current_trace_id()}

    @api.post("/orders-async")
    async def create_order_async() -> dict[str, Any]:
        return {"task_id": env.publish(), "trace_id": current_trace_id()}

    with serving(api) as url:
        yield url


@pytest.mark.parametrize("path", ["/orders", "/orders-async"])
def test_asgi_traceparent_reaches_every_event_of_the_task_and_its_child(
    env: Env, asgi_url: str, path: str
) -> None:
    response = httpx.post(asgi_url + path, headers={"traceparent": TRACEPARENT, "X-Request-ID": "ignored"})
    assert response.status_code == 200
    assert response.headers[DEFAULT_RESPONSE_HEADER] == TRACE
    assert response.json()["trace_id"] == TRACE
    _assert_traced(env, response.json()["task_id"], TRACE)


def test_asgi_request_id_is_the_trace_id(env: Env, asgi_url: str) -> None:
    request_id = f"req-{uuid.uuid4()}"
    response = httpx.post(asgi_url + "/orders", headers={"X-Request-ID": request_id})
    assert response.headers[DEFAULT_RESPONSE_HEADER] == request_id
    _assert_traced(env, response.json()["task_id"], request_id)


def test_asgi_hostile_headers_are_replaced_by_a_generated_id(env: Env, asgi_url: str) -> None:
    hostile = {
        "traceparent": "00-zzzz-not-a-traceparent",
        "X-Request-ID": "<script>alert(1)</script>",
        "X-Correlation-ID": "x" * 4000,
    }
    response = httpx.post(asgi_url + "/orders", headers=hostile)
    trace_id = response.headers[DEFAULT_RESPONSE_HEADER]
    assert len(trace_id) == 32
    assert int(trace_id, 16)
    _assert_traced(env, response.json()["task_id"], trace_id)


def test_asgi_concurrent_requests_keep_their_own_trace_ids(env: Env, asgi_url: str) -> None:
    ids = [f"conc-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    results: dict[str, str] = {}

    def call(request_id: str) -> None:
        response = httpx.post(asgi_url + "/orders", headers={"X-Correlation-ID": request_id}, timeout=30)
        results[request_id] = response.json()["task_id"]

    threads = [threading.Thread(target=call, args=(request_id,)) for request_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == sorted(ids)
    for request_id, task_id in results.items():
        _assert_traced(env, task_id, request_id)


# ---- WSGI: a plain WSGI app behind wsgiref ---------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def wsgi_url(env: Env) -> Iterator[str]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != "/orders":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        task_id = env.publish()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [task_id.encode()]

    server = make_server("127.0.0.1", 0, CeleryFlowWSGIMiddleware(app), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_wsgi_request_id_reaches_every_event_and_does_not_leak_to_the_next_request(
    env: Env, wsgi_url: str
) -> None:
    first = httpx.post(wsgi_url + "/orders", headers={"X-Request-ID": "wsgi-req-1"})
    assert first.headers[DEFAULT_RESPONSE_HEADER] == "wsgi-req-1"
    _assert_traced(env, first.text, "wsgi-req-1")

    # wsgiref serves every request on the same thread: the next request must not inherit the id.
    second = httpx.post(wsgi_url + "/orders")
    generated = second.headers[DEFAULT_RESPONSE_HEADER]
    assert generated != "wsgi-req-1"
    _assert_traced(env, second.text, generated)


def test_wsgi_traceparent_wins_and_hostile_values_are_ignored(env: Env, wsgi_url: str) -> None:
    response = httpx.post(
        wsgi_url + "/orders", headers={"X-Request-ID": "../../etc", "traceparent": TRACEPARENT}
    )
    assert response.headers[DEFAULT_RESPONSE_HEADER] == TRACE
    _assert_traced(env, response.text, TRACE)


# ---- finding the trace: the request's id opens every task it caused in the API -----------------------


def test_request_id_finds_the_tasks_in_the_trace_api(env: Env, asgi_url: str, tmp_path: Path) -> None:
    server_app = create_app(
        broker_url=env.transport_url,
        store=f"sqlite:///{tmp_path}/flow.db",
        prefix=env.prefix,
        embedded_consumer=True,
    )
    with serving(server_app) as flow_url:
        # The embedded consumer must be subscribed before the request (a RabbitMQ queue only gets what
        # is published after it exists).
        wait_for(
            lambda: httpx.get(flow_url + "/api/health").json()["consumer"]["status"] == "running",
            what="the embedded consumer to run",
        )
        request_id = f"order-{uuid.uuid4().hex[:8]}"
        response = httpx.post(asgi_url + "/orders", headers={"X-Request-ID": request_id})
        task_id = response.json()["task_id"]

        def trace_has_both_tasks() -> dict[str, Any] | None:
            reply = httpx.get(f"{flow_url}/api/traces/{request_id}")
            if reply.status_code != 200:
                return None
            body: dict[str, Any] = reply.json()
            done = [t for t in body["tasks"] if t["state"] == "SUCCESS"]
            return body if len(done) == 2 else None

        trace_view = wait_for(trace_has_both_tasks, timeout=30, what=f"trace {request_id} with two tasks")
        listed = httpx.get(f"{flow_url}/api/tasks", params={"trace_id": request_id}).json()

    assert trace_view["trace_id"] == request_id
    by_id = {t["task_id"]: t for t in trace_view["tasks"]}
    assert by_id[task_id]["name"].endswith(".place_order")
    (child,) = [t for t in by_id.values() if t["task_id"] != task_id]
    assert child["parent_id"] == task_id
    assert child["name"].endswith(".child")
    assert [f["root_id"] for f in trace_view["flows"]] == [task_id]
    assert {t["task_id"] for t in listed["items"]} == set(by_id)
