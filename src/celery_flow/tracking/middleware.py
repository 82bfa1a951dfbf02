"""Web middlewares: every task a request publishes (and everything those tasks spawn) shares one trace id.

The id comes from the request's headers, first valid one wins, in this order by default:

1. `traceparent` (W3C Trace Context): its 32-hex trace id, so celery-flow's trace id equals the
   OpenTelemetry trace id of the request (and the OTLP export lines the task spans up with it);
2. `X-Request-ID`, then 3. `X-Correlation-ID` (load balancers, API gateways, Heroku, nginx `$request_id`).

Without a valid header the id of an active OpenTelemetry span is used, else a fresh one is generated.
Header values are untrusted: a `traceparent` must match the W3C format exactly; a request id must be
1 to 128 characters of `A-Z a-z 0-9 . _ : -` (it ends up in URLs, logs and the UI). Anything else is
ignored, never truncated into something that might collide with another request's id.

Two flavours, both dependency-free: `CeleryFlowTraceMiddleware` (pure ASGI: Starlette, FastAPI, Django
ASGI, Litestar...) and `CeleryFlowWSGIMiddleware` (Flask, Django WSGI, any WSGI app).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

from celery_flow.tracking.trace import current_trace_id, new_trace_id, reset_trace_id, set_trace_id

if TYPE_CHECKING:
    # WSGIApplication is named in a string: the type argument of a base class, evaluated at runtime.
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment  # noqa: F401

__all__ = [
    "DEFAULT_REQUEST_HEADERS",
    "DEFAULT_RESPONSE_HEADER",
    "CeleryFlowTraceMiddleware",
    "CeleryFlowWSGIMiddleware",
    "parse_traceparent",
    "trace_id_from_headers",
    "valid_request_id",
]

#: Request headers read for the trace id, in order of precedence.
DEFAULT_REQUEST_HEADERS: Final = ("traceparent", "x-request-id", "x-correlation-id")
#: Response header that echoes the trace id, so a caller can look the request up in celery-flow.
DEFAULT_RESPONSE_HEADER: Final = "X-Celery-Flow-Trace-Id"

MAX_REQUEST_ID_LENGTH: Final = 128
# 1 + 127 = MAX_REQUEST_ID_LENGTH characters.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
# version-traceid-parentid-flags; a future version (not 00) may append fields after another dash.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
_MAX_TRACEPARENT = 512

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AppT = TypeVar("AppT")


def parse_traceparent(value: str) -> str | None:
    """The trace id of a valid W3C `traceparent` value, else None (invalid values are ignored)."""
    value = value.strip()
    if len(value) > _MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id


def valid_request_id(value: str) -> str | None:
    """`value` stripped if it is a safe request id (1 to 128 chars of A-Z a-z 0-9 . _ : -), else None."""
    value = value.strip()
    return value if _REQUEST_ID.fullmatch(value) else None


def trace_id_from_headers(
    get: Callable[[str], str | None], headers: Sequence[str] = DEFAULT_REQUEST_HEADERS
) -> str | None:
    """The first valid trace id among `headers` (lower-case names; `get` returns a header's value)."""
    for name in headers:
        value = get(name)
        if not value:
            continue
        found = parse_traceparent(value) if name == "traceparent" else valid_request_id(value)
        if found:
            return found
    return None


class _TraceMiddleware(Generic[AppT]):
    """What both middlewares share: the app they wrap, which headers to read, what to do without one."""

    def __init__(
        self,
        app: AppT,
        *,
        headers: Sequence[str] = DEFAULT_REQUEST_HEADERS,
        response_header: str | None = DEFAULT_RESPONSE_HEADER,
        generate: bool = True,
    ) -> None:
        self.app = app
        self.headers = tuple(name.lower() for name in headers)
        self.response_header = response_header
        self.generate = generate

    def resolve(self, get: Callable[[str], str | None]) -> str | None:
        found = trace_id_from_headers(get, self.headers)
        if found:
            return found
        # An OpenTelemetry instrumentation running outside this middleware already has a trace id.
        return current_trace_id() or (new_trace_id() if self.generate else None)


class CeleryFlowTraceMiddleware(_TraceMiddleware[ASGIApp]):
    """Pure ASGI middleware: the request's trace id is current (`celery_flow.current_trace_id()`) while
    the app handles it, so every task it publishes carries it.

    FastAPI / Starlette: `app.add_middleware(CeleryFlowTraceMiddleware)`; any ASGI app:
    `app = CeleryFlowTraceMiddleware(app)`. `response_header=None` turns the echo off; `generate=False`
    leaves requests without a trace id header untraced.
    """

    @functools.cached_property
    def _echo(self) -> bytes | None:
        """The response header as ASGI sends it (lowercase bytes); None: no echo."""
        return self.response_header.lower().encode("latin-1") if self.response_header else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        wanted = self.headers
        values: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers") or ():
            name = bytes(raw_name).decode("latin-1").lower()
            if name in wanted and name not in values:
                values[name] = bytes(raw_value).decode("latin-1")
        trace_id = self.resolve(values.get)
        if trace_id is None:
            await self.app(scope, receive, send)
            return

        echo = self._echo
        if echo is not None and scope["type"] == "http":
            header = (echo, trace_id.encode("latin-1"))

            async def send_with_header(message: Message) -> None:
                if message.get("type") == "http.response.start":
                    existing = list(message.get("headers") or ())
                    if not any(bytes(name).lower() == echo for name, _ in existing):
                        message["headers"] = [*existing, header]
                await send(message)

            downstream: Send = send_with_header
        else:
            downstream = send

        token = set_trace_id(trace_id)
        try:
            await self.app(scope, receive, downstream)
        finally:
            reset_trace_id(token)


class CeleryFlowWSGIMiddleware(_TraceMiddleware["WSGIApplication"]):
    """WSGI middleware: the request's trace id is current while the app runs and while its response
    body is produced (streaming responses publish tasks too), and only then.

    Flask: `app.wsgi_app = CeleryFlowWSGIMiddleware(app.wsgi_app)`; Django (wsgi.py):
    `application = CeleryFlowWSGIMiddleware(get_wsgi_application())`.
    """

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def header(name: str) -> str | None:
            value = environ.get("HTTP_" + name.upper().replace("-", "_"))
            return value if isinstance(value, str) else None

        trace_id = self.resolve(header)
        if trace_id is None:
            return self.app(environ, start_response)

        echo = self.response_header

        def start_with_header(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if echo and not any(name.lower() == echo.lower() for name, _ in headers):
                headers = [*headers, (echo, trace_id)]
            if exc_info is None:
                return start_response(status, headers)
            return start_response(status, headers, exc_info)

        token = set_trace_id(trace_id)
        try:
            body = self.app(environ, start_with_header)
        finally:
            # Reset before returning: WSGI servers reuse threads, and a trace id left behind would tag the
            # next request's tasks.
            reset_trace_id(token)
        if isinstance(body, (list, tuple)):
            return body
        return _TracedBody(body, trace_id)


class _TracedBody:
    """A lazy WSGI response body whose every step (and close) runs inside the request's trace."""

    def __init__(self, body: Iterable[bytes], trace_id: str) -> None:
        self._body = body
        self._trace_id = trace_id
        self._iter: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = set_trace_id(self._trace_id)
        try:
            if self._iter is None:
                self._iter = iter(self._body)
            return next(self._iter)
        finally:
            reset_trace_id(token)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is None:
            return
        token = set_trace_id(self._trace_id)
        try:
            close()
        finally:
            reset_trace_id(token)
