"""The `celery-flow` command line: `server`, `consume`, `demo`, and `celery -A proj flow ...`.

Every startup problem a user can fix (a bad URL, a broker that does not answer, a store that cannot be
written, malformed credentials) ends the command with one line naming the fix and exit code 2, never a
traceback. Problems that appear later (the broker restarts) leave the server up: health turns
`degraded` and the consumer reconnects.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn, TypeVar

import click

from celery_flow import __version__
from celery_flow.consumer import DEFAULT_GROUP, Sink
from celery_flow.server.config import ServerConfig
from celery_flow.server.config import resolve as resolve_config
from celery_flow.transport import from_url, redact_url
from celery_flow.transport.base import ConfigError, TransportError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
EXIT_CONFIG = 2

log = logging.getLogger("celery_flow.cli")


class FatalError(click.ClickException):
    """A one-line, fixable startup error: printed as `Error: ...`, exit code 2."""

    exit_code = EXIT_CONFIG


def fail(message: str) -> NoReturn:
    raise FatalError(message)


# ---- resolving settings -------------------------------------------------------------------------


def resolve(
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None = None,
    max_tasks: int | None = None,
    basic_auth: str | None = None,
) -> ServerConfig:
    """Arguments first, then CELERY_FLOW_* variables, then defaults; exit 2 on a bad value."""
    try:
        return resolve_config(broker_url, store, prefix, ttl, max_tasks, basic_auth)
    except ValueError as exc:  # ConfigError is a ValueError
        fail(_one_line(exc))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_broker(broker_url: str, prefix: str) -> None:
    """Fail fast (exit 2) on a URL we cannot use or a broker that does not answer right now."""
    try:
        transport = from_url(broker_url, prefix=prefix)
    except ConfigError as exc:
        fail(_one_line(exc))
    try:
        transport.ping()
    except TransportError as exc:
        fail(
            f"cannot reach the broker at {redact_url(broker_url)} ({_one_line(exc)}): start it, or fix "
            "--broker-url / CELERY_FLOW_BROKER_URL"
        )
    finally:
        transport.close()


def open_store_or_fail(store_url: str, migrate: Any = "auto") -> Any:
    """Open (creating or migrating if needed) the store, or exit 2 with the store's one-line reason and
    fix; `migrate` as open_store() takes it."""
    from celery_flow.store import open_store
    from celery_flow.store.base import StoreError

    try:
        return open_store(store_url, migrate)
    except StoreError as exc:
        fail(f"cannot open the store {redact_url(store_url)}: {_one_line(exc)}")
    except ConfigError as exc:
        fail(_one_line(exc))
    except Exception as exc:  # a driver error we did not anticipate: still one line, still the fix
        fail(
            f"cannot open the store {redact_url(store_url)} ({type(exc).__name__}: {_one_line(exc)}): "
            "check --store / CELERY_FLOW_STORE (sqlite:///path.db or postgresql://...)"
        )


def check_port(host: str, port: int) -> None:
    """Fail fast (exit 2) when the address is taken, before any startup work and log lines."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror}): check --host")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind(address)
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port or --host")


def check_store(store_url: str) -> None:
    store = open_store_or_fail(store_url)
    store.close()


# ---- sinks (OTLP export plugs in here) ----------------------------------------------------------


def sink_options(func: F) -> F:
    """Options that configure consumer sinks, shared by `server` and `consume` (e.g. --otlp-endpoint)."""
    return click.option(
        "--otlp-endpoint", default=None, metavar="URL",
        help="Export finished tasks as OpenTelemetry spans over OTLP/HTTP, e.g. http://localhost:4318. "
        "Env: OTEL_EXPORTER_OTLP_ENDPOINT. Needs `pip install 'celery-flow[otlp]'`.",
    )(func)  # fmt: skip


def build_sinks(store: Any, otlp_endpoint: str | None = None, **options: Any) -> list[Sink]:
    """The callables the consumer runs after each commit, from the options `sink_options` adds."""
    from celery_flow.export import otlp_sink

    try:
        exporter = otlp_sink(store, otlp_endpoint)
    except ConfigError as exc:
        fail(str(exc))
    return [exporter] if exporter is not None else []


def reload_sink_env(otlp_endpoint: str | None = None, **options: Any) -> dict[str, str]:
    """The sink options as the environment of the process `--reload` serves from, which builds its sinks
    from the environment alone (server.app.create_app_from_env). Checked here, so that a bad value is a
    one-line error before the reloader starts: an explicit endpoint becomes the standard
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (a full URL), over any endpoint already in the environment."""
    if otlp_endpoint is None or not otlp_endpoint.strip():
        return {}
    from celery_flow.export import require_otlp_sdk, resolve_otlp_endpoint

    try:
        resolved = resolve_otlp_endpoint(otlp_endpoint)
        require_otlp_sdk()
    except ConfigError as exc:
        fail(str(exc))
    assert resolved is not None
    return {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": resolved,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }


# ---- shared options -----------------------------------------------------------------------------


def common_options(func: F) -> F:
    """--broker-url, --store, --prefix, --ttl, --max-tasks, for both `server` and `consume`."""
    decorators = [
        click.option("--broker-url", "-b", envvar=None, default=None, metavar="URL",
                     help="Broker the events travel through (redis://, amqp://...). "
                          "Env: CELERY_FLOW_BROKER_URL."),
        click.option("--store", "-s", default=None, metavar="URL",
                     help="sqlite:///path.db or postgresql://... Env: CELERY_FLOW_STORE. "
                          "Default: a SQLite file in the user data directory."),
        click.option("--prefix", default=None, help="Stream/exchange prefix (must match init()). "
                                                    "Env: CELERY_FLOW_PREFIX. Default: celery_flow."),
        click.option("--ttl", default=None, metavar="DURATION",
                     help="Delete tasks older than this (3600, 30m, 24h, 7d; 0 keeps everything). "
                          "Env: CELERY_FLOW_TTL. Default: 1 day."),
        click.option("--max-tasks", type=click.IntRange(min=1), default=None,
                     help="Keep at most this many tasks (oldest deleted first). Env: CELERY_FLOW_MAX_TASKS."),
    ]  # fmt: skip
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def exit_cleanly_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl+C: uvicorn re-raises the signal it caught once it has shut down,
    and with the default handler the process would die before our `finally` blocks (closing the store,
    removing the demo's temporary directory) run."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# ---- commands -----------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="celery-flow")
def main() -> None:
    """celery-flow: see what happened in your Celery workflows."""


def run_server(
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None,
    max_tasks: int | None,
    host: str,
    port: int,
    reload: bool,
    no_consumer: bool,
    basic_auth: str | None,
    log_level: str,
    sink_kwargs: dict[str, Any],
) -> None:
    cfg = resolve(broker_url, store, prefix, ttl, max_tasks, basic_auth)
    if cfg.broker_url is None and not no_consumer:
        fail(
            "no broker given: pass --broker-url redis://host:6379/0 (or set CELERY_FLOW_BROKER_URL), "
            "or --no-consumer when a separate `celery-flow consume` folds the events"
        )
    if cfg.broker_url is not None:
        check_broker(cfg.broker_url, cfg.prefix)
    check_port(host, port)
    setup_logging(log_level)
    exit_cleanly_on_sigterm()
    import uvicorn

    if reload:
        # The reloader re-imports the app in a fresh process: hand it the settings through the env.
        env = {
            "CELERY_FLOW_STORE": cfg.store_url,
            "CELERY_FLOW_PREFIX": cfg.prefix,
            "CELERY_FLOW_TTL": str(int(cfg.ttl or 0)),
            "CELERY_FLOW_EMBEDDED_CONSUMER": "0" if no_consumer else "1",
        }
        if cfg.broker_url:
            env["CELERY_FLOW_BROKER_URL"] = cfg.broker_url
        if cfg.max_tasks:
            env["CELERY_FLOW_MAX_TASKS"] = str(cfg.max_tasks)
        if cfg.basic_auth:
            env["CELERY_FLOW_BASIC_AUTH"] = ":".join(cfg.basic_auth)
        env.update(reload_sink_env(**sink_kwargs))
        check_store(cfg.store_url)
        os.environ.update(env)
        _announce(host, port, cfg)
        # Watch celery-flow's own code, the code --reload is for, not the (possibly huge) working directory.
        package = os.path.dirname(os.path.abspath(__file__))
        uvicorn.run("celery_flow.server.app:create_app_from_env", factory=True, host=host, port=port,
                    reload=True, reload_dirs=[package], log_level=log_level.lower())  # fmt: skip
        return

    from celery_flow.server.app import create_app

    opened = open_store_or_fail(cfg.store_url)
    app = create_app(
        broker_url=cfg.broker_url,
        store=opened,
        store_url=cfg.store_url,
        basic_auth=cfg.basic_auth,
        embedded_consumer=not no_consumer,
        prefix=cfg.prefix,
        ttl=cfg.ttl,
        max_tasks=cfg.max_tasks,
        sinks=build_sinks(opened, **sink_kwargs),
    )
    _announce(host, port, cfg)
    try:
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level.lower())).run()
    finally:
        opened.close()


def _announce(host: str, port: int, cfg: ServerConfig) -> None:
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 - only for display
    auth = " (basic auth on)" if cfg.basic_auth else ""
    if not cfg.basic_auth and host not in {"127.0.0.1", "localhost", "::1"}:
        click.echo(
            f"warning: listening on {host} without --basic-auth: anyone who can reach port {port} sees "
            "task arguments, results and tracebacks (set --basic-auth user:pass or CELERY_FLOW_BASIC_AUTH)",
            err=True,
        )
    broker = redact_url(cfg.broker_url) if cfg.broker_url else "none (external consumer)"
    click.echo(
        f"celery-flow {__version__}: http://{shown}:{port}/{auth}  broker={broker}  "
        f"store={redact_url(cfg.store_url)}",
        err=True,
    )


@main.command("server")
@common_options
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--reload", is_flag=True, help="Restart on code changes (development).")
@click.option("--no-consumer", is_flag=True,
              help="Do not fold events in this process (a separate `celery-flow consume` does).")  # fmt: skip
@click.option("--basic-auth", default=None, metavar="USER:PASS",
              help="Require HTTP basic auth on every route. Env: CELERY_FLOW_BASIC_AUTH.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))  # fmt: skip
@sink_options
def server_command(
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None,
    max_tasks: int | None,
    host: str,
    port: int,
    reload: bool,
    no_consumer: bool,
    basic_auth: str | None,
    log_level: str,
    **sink_kwargs: Any,
) -> None:
    """Serve the UI and API; by default also fold the broker's events into the store."""
    run_server(broker_url, store, prefix, ttl, max_tasks, host, port, reload, no_consumer, basic_auth,
               log_level, sink_kwargs)  # fmt: skip


def run_consume(
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None,
    max_tasks: int | None,
    name: str | None,
    group: str,
    batch: int,
    log_level: str,
    sink_kwargs: dict[str, Any],
) -> None:
    from celery_flow.consumer import Consumer

    cfg = resolve(broker_url, store, prefix, ttl, max_tasks)
    if cfg.broker_url is None:
        fail("no broker given: pass --broker-url redis://host:6379/0 or set CELERY_FLOW_BROKER_URL")
    check_broker(cfg.broker_url, cfg.prefix)
    setup_logging(log_level)  # before the store opens: a migration logs what it does
    opened = open_store_or_fail(cfg.store_url)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    consumer = Consumer(
        cfg.broker_url, opened, prefix=cfg.prefix, group=group, name=name, batch=batch, ttl=cfg.ttl,
        max_tasks=cfg.max_tasks, sinks=build_sinks(opened, **sink_kwargs),
    )  # fmt: skip
    click.echo(
        f"celery-flow consume: broker={redact_url(cfg.broker_url)} store={redact_url(cfg.store_url)} "
        f"prefix={cfg.prefix} group={group} name={consumer.name}",
        err=True,
    )
    try:
        consumer.run(stop)
    finally:
        opened.close()


@main.command("consume")
@common_options
@click.option("--name", default=None, help="Consumer name in the group. Default: {hostname}:{pid}.")
@click.option("--group", default=DEFAULT_GROUP, show_default=True, help="Consumer group shared by consumers.")
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))  # fmt: skip
@sink_options
def consume_command(
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None,
    max_tasks: int | None,
    name: str | None,
    group: str,
    batch: int,
    log_level: str,
    **sink_kwargs: Any,
) -> None:
    """Fold the broker's events into the store, without serving HTTP (scale these out)."""
    run_consume(broker_url, store, prefix, ttl, max_tasks, name, group, batch, log_level, sink_kwargs)


@main.command("migrate")
@click.option("--store", "-s", default=None, metavar="URL",
              help="sqlite:///path.db or postgresql://... Env: CELERY_FLOW_STORE. "
                   "Default: the SQLite file in the user data directory.")  # fmt: skip
@click.option(
    "--dry-run", is_flag=True, help="Print what would be done and how many rows it touches; write nothing."
)
def migrate_command(store: str | None, dry_run: bool) -> None:
    """Bring a store an older celery-flow wrote to this version's schema, re-fold of every task included.

    The server and `consume` do the same by themselves when they open an older store (the re-fold then
    runs in the background); this runs it all now, in the foreground, for a rollout that wants it done
    before the new version starts.
    """
    run_migrate(store, dry_run)


def run_migrate(store: str | None, dry_run: bool) -> None:
    from celery_flow.store import sqlite_path
    from celery_flow.store.backfill import RefoldProgress, describe
    from celery_flow.store.backfill import run as refold

    cfg = resolve(None, store, None)
    url = cfg.store_url
    if url.lower().startswith("sqlite:") and not os.path.exists(sqlite_path(url)):
        fail(f"no store at {redact_url(url)}: nothing to migrate (check --store / CELERY_FLOW_STORE)")
    setup_logging("warning")
    opened = open_store_or_fail(url, "plan")
    plan = opened.migration
    opened.close()
    if plan.found is None:
        fail(f"{redact_url(url)} holds no celery-flow store: nothing to migrate (check --store / "
             "CELERY_FLOW_STORE)")  # fmt: skip
    for line in plan.describe():
        click.echo(line)
    if dry_run or (not plan.steps and not plan.refold):
        if dry_run:
            click.echo("dry run: nothing was written")
        return
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    opened = open_store_or_fail(url, "foreground")
    try:
        applied = [str(step.version) for step in opened.migration.steps]
        if applied:
            click.echo(f"applied step {', '.join(applied)}: the schema is up to date")
        elif plan.steps:
            click.echo("another process migrated the schema meanwhile")

        def report(progress: RefoldProgress, finished: bool) -> None:
            click.echo(describe(progress, finished))

        refold(opened, stop, report=report, every=5.0)
    except Exception as exc:  # StoreError mostly: one line, and the re-fold resumes next time
        fail(f"the re-fold stopped: {_one_line(exc)}; run `celery-flow migrate` again to resume it")
    finally:
        opened.close()
    if stop.is_set():
        click.echo("interrupted: the re-fold resumes where it stopped when celery-flow next opens the store")
        sys.exit(130)
    click.echo("done")


@main.command("demo")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--store",
    "-s",
    default=None,
    metavar="URL",
    help="Where to keep the demo's data. Default: a fresh SQLite file in a temporary directory.",
)
@click.option("--rate", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Workflows started per second.")  # fmt: skip
def demo_command(host: str, port: int, store: str | None, rate: float) -> None:
    """Run an in-process Celery app producing realistic workflows and serve the UI (no broker needed)."""
    from celery_flow.demo import run_demo

    run_demo(host=host, port=port, store_url=store, rate=rate)


# ---- `celery -A proj flow ...` --------------------------------------------------------------------


def _app_broker(ctx: click.Context) -> str | None:
    obj = ctx.find_root().obj
    app = getattr(obj, "app", None)
    if app is None:
        return None
    try:
        url = app.conf.broker_url or app.conf.broker_read_url
    except Exception:
        return None
    if isinstance(url, (list, tuple)):
        url = url[0] if url else None
    return str(url) if url else None


@click.group("flow", context_settings={"help_option_names": ["-h", "--help"]})
def celery_command() -> None:
    """celery-flow server and consumer, taking the broker from the Celery app (-A)."""


@celery_command.command("server")
@common_options
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--no-consumer", is_flag=True)
@click.option("--basic-auth", default=None, metavar="USER:PASS")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))  # fmt: skip
@sink_options
@click.pass_context
def celery_server(
    ctx: click.Context,
    /,
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None,
    max_tasks: int | None,
    host: str,
    port: int,
    no_consumer: bool,
    basic_auth: str | None,
    log_level: str,
    **sink_kwargs: Any,
) -> None:
    """Serve the UI and API for this Celery app."""
    broker = broker_url or os.environ.get("CELERY_FLOW_BROKER_URL") or _app_broker(ctx)
    run_server(broker, store, prefix, ttl, max_tasks, host, port, False, no_consumer, basic_auth,
               log_level, sink_kwargs)  # fmt: skip


@celery_command.command("consume")
@common_options
@click.option("--name", default=None)
@click.option("--group", default=DEFAULT_GROUP, show_default=True)
@click.option("--batch", type=click.IntRange(1, 10_000), default=500, show_default=True)
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))  # fmt: skip
@sink_options
@click.pass_context
def celery_consume(
    ctx: click.Context,
    /,
    broker_url: str | None,
    store: str | None,
    prefix: str | None,
    ttl: str | None,
    max_tasks: int | None,
    name: str | None,
    group: str,
    batch: int,
    log_level: str,
    **sink_kwargs: Any,
) -> None:
    """Fold this Celery app's celery-flow events into the store."""
    broker = broker_url or os.environ.get("CELERY_FLOW_BROKER_URL") or _app_broker(ctx)
    run_consume(broker, store, prefix, ttl, max_tasks, name, group, batch, log_level, sink_kwargs)


if __name__ == "__main__":  # pragma: no cover
    main()
