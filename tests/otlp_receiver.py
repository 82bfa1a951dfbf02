"""A real OTLP/HTTP traces receiver for tests: `POST /v1/traces` with a protobuf ExportTraceServiceRequest.

It decodes every request with opentelemetry-proto (the same schema Jaeger, Tempo and the Collector use)
and keeps the spans as plain dicts, so tests assert on what a backend would actually receive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.wait import WaitTimeout, wait_for


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return None if kind is None else getattr(value, kind)


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    kind: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    resource: dict[str, Any]
    scope: str


@dataclass
class Receiver:
    url: str
    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    # HTTP status the receiver answers with (set to 400 to simulate a collector refusing data).
    status: int = 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_name(self) -> dict[str, list[ReceivedSpan]]:
        with self.lock:
            out: dict[str, list[ReceivedSpan]] = {}
            for span in self.spans:
                out.setdefault(span.name, []).append(span)
            return out

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0) -> None:
        def check() -> bool:
            with self.lock:
                return predicate(list(self.spans))

        try:
            wait_for(check, timeout, "the expected spans at the receiver", retry_on=())
        except WaitTimeout as exc:
            with self.lock:
                names = [span.name for span in self.spans]
            raise AssertionError(f"{exc}; got {names}") from None


def _decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        kind=span.kind,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        events=[
                            (e.name, e.time_unix_nano, {a.key: _value(a.value) for a in e.attributes})
                            for e in span.events
                        ],
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port, shut down on exit."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            with receiver.lock:
                receiver.requests += 1
                status = receiver.status
                if status == 200:
                    receiver.spans.extend(_decode(body))
            payload = ExportTraceServiceResponse().SerializeToString() if status == 200 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
