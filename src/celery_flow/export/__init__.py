"""Exporting finished tasks to other observability tools (OpenTelemetry).

This package imports nothing beyond the standard library at import time: the OpenTelemetry SDK is an
optional extra (`pip install 'celery-flow[otlp]'`) loaded only when export is switched on, so the CLI can
resolve `--otlp-endpoint` and give a one-line error when the extra is missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from celery_flow.errors import ConfigError
from celery_flow.transport import redact_url

if TYPE_CHECKING:
    from celery_flow.export.otlp import OtlpExporter
    from celery_flow.store.base import Store

__all__ = [
    "OTLP_INSTALL_HINT",
    "create_otlp_exporter",
    "otlp_export_endpoint",
    "otlp_sink",
    "require_otlp_sdk",
    "resolve_otlp_endpoint",
]

log = logging.getLogger("celery_flow.export")

OTLP_INSTALL_HINT = "pip install 'celery-flow[otlp]'"
TRACES_PATH = "/v1/traces"


def resolve_otlp_endpoint(explicit: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The full OTLP/HTTP traces URL to export to, or None when export is off.

    Precedence: `explicit` (`--otlp-endpoint`), then the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    (a full URL, used as is), then `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL). A base URL such as
    `http://collector:4318` gets `/v1/traces` appended, as the OpenTelemetry specification says; a URL
    that already ends in `/v1/traces` is used as is.
    """
    env = os.environ if environ is None else environ
    if explicit is not None and explicit.strip():
        return _checked(explicit.strip(), "--otlp-endpoint", append_path=True)
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if traces:
        return _checked(traces, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", append_path=False)
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return _checked(base, "OTEL_EXPORTER_OTLP_ENDPOINT", append_path=True)
    return None


def _checked(url: str, source: str, append_path: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(
            f"{source}={url!r} is not an OTLP/HTTP URL: expected e.g. http://localhost:4318 "
            "(OTLP over HTTP/protobuf; gRPC port 4317 is not supported)"
        )
    if append_path and not parts.path.rstrip("/").endswith(TRACES_PATH):
        return url.rstrip("/") + TRACES_PATH
    return url


def require_otlp_sdk() -> None:
    """Raise ConfigError naming the extra to install when the OpenTelemetry SDK cannot be imported."""
    try:
        import celery_flow.export.otlp  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"OTLP export needs the OpenTelemetry SDK ({exc.name or exc} is missing): {OTLP_INSTALL_HINT}"
        ) from None


def create_otlp_exporter(endpoint: str | None, store: Store, **options: Any) -> OtlpExporter:
    """An `OtlpExporter` sink (endpoint None: the SDK default, http://localhost:4318/v1/traces), or
    ConfigError naming the extra to install when the SDK is missing."""
    require_otlp_sdk()
    from celery_flow.export.otlp import OtlpExporter

    return OtlpExporter(endpoint, store, **options)


def otlp_export_endpoint(endpoint: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The traces URL to export to for `--otlp-endpoint` / OTEL_EXPORTER_OTLP_*, or None when export is off.

    An explicit `endpoint` that cannot work (bad URL, `otlp` extra missing) raises ConfigError (a one-line
    fix). One that only comes from the environment logs a warning and leaves export off instead: those
    variables are often set for a whole host or pod (and may mean gRPC), and must not stop a server that
    never asked for export.
    """
    env = os.environ if environ is None else environ
    explicit = endpoint is not None and bool(endpoint.strip())
    try:
        resolved = resolve_otlp_endpoint(endpoint, env)
        if resolved is None:
            return None
        if not explicit:
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            if protocol and protocol.strip().lower() != "http/protobuf":
                raise ConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: celery-flow exports OTLP over http/protobuf "
                    "only; pass --otlp-endpoint http://collector:4318 to export"
                )
        require_otlp_sdk()
    except ConfigError as exc:
        if explicit:
            raise
        log.warning("OpenTelemetry export is off: %s", exc)
        return None
    return resolved


def otlp_sink(store: Store, endpoint: str) -> OtlpExporter:
    """The OTLP exporter sink for a resolved `endpoint` (otlp_export_endpoint); its caller closes it."""
    exporter = create_otlp_exporter(endpoint, store)
    log.info("exporting finished tasks as OpenTelemetry spans to %s", redact_url(endpoint))
    return exporter
