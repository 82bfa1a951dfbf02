"""Trace-id middlewares: header parsing, precedence, hostile values, scoping (ASGI and WSGI).

The ASGI app is a real Starlette app driven through httpx's ASGI transport; the WSGI app is called the
way a WSGI server calls it. Real HTTP servers and a real Celery worker are in
tests/integration/test_middleware_http.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from celery_flow.tracking.middleware import (
    DEFAULT_RESPONSE_HEADER,
    CeleryFlowTraceMiddleware,
    CeleryFlowWSGIMiddleware,
    parse_traceparent,
    valid_request_id,
)
from celery_flow.tracking.trace import current_trace_id, trace

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


# ---- parsing ---------------------------------------------------------------------------------------


def test_traceparent_gives_the_w3c_trace_id() -> None:
    assert parse_traceparent(TRACEPARENT) == TRACE
    assert parse_traceparent(f"  {TRACEPARENT} ") == TRACE
    # A future version may append fields.
    assert parse_traceparent(f"01-{TRACE}-00f067aa0ba902b7-01-extra") == TRACE


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"ff-{TRACE}-00f067aa0ba902b7-01",  # forbidden version
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # upper-case hex is invalid in W3C
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",
        f"00-{TRACE}-00f067aa0ba902b7-01\r\nX-Evil: 1",
        f"01-{TRACE}-00f067aa0ba902b7-01-" + "x" * 1000,  # absurdly long
    ],
)
def test_invalid_traceparent_is_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


@pytest.mark.parametrize(
    "value", ["req-123", "7f3a9c1e-2b4d-4e8f-9a0b-1c2d3e4f5a6b", "01HGW2N7EXAMPLE", "a.b:c_d", "x" * 128]
)
def test_valid_request_ids_are_kept(value: str) -> None:
    assert valid_request_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "x" * 129,
        "<script>alert(1)</script>",
        "../../etc/passwd",
        "id with spaces",
        "id\r\nSet-Cookie: a=b",
        "id\x00null",
        "-leading-dash",
        "ünïcode",
        "a/b",
        "a?b=c",
    ],
)
def test_hostile_request_ids_are_rejected(value: str) -> None:
    assert valid_request_id(value) is None


@given(st.text(max_size=300))
def test_any_accepted_request_id_is_short_and_url_safe(value: str) -> None:
    accepted = valid_request_id(value)
    if accepted is not None:
        assert 1 <= len(accepted) <= 128
        assert all(c.isascii() and (c.isalnum() or c in "._:-") for c in accepted)


@given(st.text(max_size=600))
def test_parse_traceparent_never_raises_and_returns_only_w3c_trace_ids(value: str) -> None:
    found = parse_traceparent(value)
    if found is not None:
        assert len(found) == 32
        assert set(found) <= set("0123456789abcdef")


# ---- ASGI ------------------------------------------------------------------------------------------


async def _whoami(request: Request) -> JSONResponse:
    return JSONResponse({"trace_id": current_trace_id()})


def _sync_whoami(request: Request) -> JSONResponse:
    # Sync endpoints run in a thread pool: the context (and so the trace id) is copied there.
    return JSONResponse({"trace_id": current_trace_id(), "thread": threading.current_thread().name})


def _asgi(**options: Any) -> Starlette:
    app = Starlette(routes=[Route("/", _whoami), Route("/sync", _sync_whoami)])
    app.add_middleware(CeleryFlowTraceMiddleware, **options)
    return app


def _get(app: Any, path: str = "/", headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"traceparent": TRACEPARENT, "X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}, TRACE),
        ({"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}, "req-1"),
        ({"X-Correlation-ID": "corr-1"}, "corr-1"),
        # An invalid header falls through to the next one.
        ({"traceparent": "bogus", "X-Request-ID": "<bad>", "X-Correlation-ID": "corr-2"}, "corr-2"),
    ],
)
def test_asgi_precedence_traceparent_then_request_id_then_correlation_id(
    headers: dict[str, str], expected: str
) -> None:
    response = _get(_asgi(), headers=headers)
    assert response.json()["trace_id"] == expected
    assert response.headers[DEFAULT_RESPONSE_HEADER] == expected


def test_asgi_without_header_generates_one_id_per_request_and_echoes_it() -> None:
    app = _asgi()
    first, second = _get(app), _get(app)
    ids = [first.json()["trace_id"], second.json()["trace_id"]]
    assert all(isinstance(i, str) and len(i) == 32 for i in ids)
    assert ids[0] != ids[1]
    assert first.headers[DEFAULT_RESPONSE_HEADER] == ids[0]


def test_asgi_hostile_header_never_reaches_the_trace_id_or_the_response() -> None:
    evil = "x" * 5000
    response = _get(_asgi(), headers={"X-Request-ID": evil, "X-Correlation-ID": "<img src=x>"})
    trace_id = response.json()["trace_id"]
    assert trace_id not in (evil, "<img src=x>")
    assert len(trace_id) == 32
    assert response.headers[DEFAULT_RESPONSE_HEADER] == trace_id


def test_asgi_sync_endpoint_sees_the_trace_id_in_its_thread() -> None:
    response = _get(_asgi(), "/sync", headers={"X-Request-ID": "req-sync"})
    assert response.json()["trace_id"] == "req-sync"


def test_asgi_options_custom_headers_no_echo_no_generate() -> None:
    app = _asgi(headers=("x-amzn-request-id",), response_header=None, generate=False)
    response = _get(app, headers={"X-Amzn-Request-Id": "aws-1", "X-Request-ID": "ignored"})
    assert response.json()["trace_id"] == "aws-1"
    assert DEFAULT_RESPONSE_HEADER not in response.headers
    assert _get(app).json()["trace_id"] is None


def test_asgi_passes_lifespan_and_resets_after_the_request() -> None:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_trace_id())
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    wrapped = CeleryFlowTraceMiddleware(app)

    async def go() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: Any) -> None:
            pass

        await wrapped({"type": "lifespan"}, receive, send)
        scope = {"type": "http", "headers": [(b"x-request-id", b"req-9")]}
        await wrapped(scope, receive, send)
        seen.append(current_trace_id())

    asyncio.run(go())
    assert seen == [None, "req-9", None]


def test_asgi_request_header_overrides_an_enclosing_trace() -> None:
    async def go() -> httpx.Response:
        with trace("outer"):
            transport = httpx.ASGITransport(app=_asgi())
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.get("/", headers={"X-Request-ID": "inner"})

    assert asyncio.run(go()).json()["trace_id"] == "inner"


# ---- WSGI ------------------------------------------------------------------------------------------


def _call_wsgi(app: Any, headers: dict[str, str] | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    captured: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = status
        captured["headers"] = response_headers
        return lambda data: None

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        if hasattr(body, "close"):
            body.close()
    return captured["status"], captured["headers"], data


def _plain_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(current_trace_id() or "none").encode()]


def test_wsgi_takes_the_header_and_echoes_it() -> None:
    status, headers, body = _call_wsgi(
        CeleryFlowWSGIMiddleware(_plain_wsgi), {"traceparent": TRACEPARENT, "X-Request-ID": "req-1"}
    )
    assert status == "200 OK"
    assert body == TRACE.encode()
    assert (DEFAULT_RESPONSE_HEADER, TRACE) in headers
    assert current_trace_id() is None  # nothing left behind in this (reused) thread


def test_wsgi_hostile_header_is_replaced_by_a_generated_id() -> None:
    _, headers, body = _call_wsgi(CeleryFlowWSGIMiddleware(_plain_wsgi), {"X-Request-ID": "a\r\nb"})
    assert len(body) == 32
    assert dict(headers)[DEFAULT_RESPONSE_HEADER] == body.decode()


def test_wsgi_streaming_body_is_produced_inside_the_trace_and_closed_inside_it() -> None:
    seen: list[str | None] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            seen.append(current_trace_id())
            yield b"a"
            seen.append(current_trace_id())
            yield b"b"

        def close(self) -> None:
            seen.append(current_trace_id())

    def app(environ: Any, start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    _, _, body = _call_wsgi(CeleryFlowWSGIMiddleware(app), {"X-Correlation-ID": "corr-stream"})
    assert body == b"ab"
    assert seen == ["corr-stream", "corr-stream", "corr-stream"]
    assert current_trace_id() is None


def test_wsgi_app_error_still_resets_the_trace() -> None:
    def broken(environ: Any, start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        _call_wsgi(CeleryFlowWSGIMiddleware(broken), {"X-Request-ID": "req-err"})
    assert current_trace_id() is None


def test_wsgi_response_header_not_duplicated_when_the_app_sets_it() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [(DEFAULT_RESPONSE_HEADER, "app-chosen")])
        return [b""]

    _, headers, _ = _call_wsgi(CeleryFlowWSGIMiddleware(app), {"X-Request-ID": "req-1"})
    assert [v for k, v in headers if k == DEFAULT_RESPONSE_HEADER] == ["app-chosen"]


def test_plaintext_response_is_untouched_by_asgi_middleware() -> None:
    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/", hello)])
    app.add_middleware(CeleryFlowTraceMiddleware)
    response = _get(app, headers={"X-Request-ID": "r"})
    assert response.text == "hello"
    assert response.headers["content-length"] == "5"


def test_asgi_websocket_handlers_see_the_trace_id() -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"trace_id": current_trace_id()})
        await websocket.close()

    app = Starlette(routes=[WebSocketRoute("/ws", ws)])
    app.add_middleware(CeleryFlowTraceMiddleware)
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/ws",
            "raw_path": b"/ws",
            "query_string": b"",
            "headers": [(b"x-request-id", b"ws-1")],
            "scheme": "ws",
            "server": ("test", 80),
            "client": ("127.0.0.1", 1234),
            "root_path": "",
            "subprotocols": [],
        }
        await app(scope, receive, send)

    asyncio.run(go())
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == '{"trace_id":"ws-1"}'
