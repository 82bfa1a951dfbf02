"""The `celery-flow` command line: `server`, `consume`, `migrate`, `demo`, `mcp`, and
`celery -A proj flow ...`.

Every startup problem a user can fix (a bad URL, a broker that does not answer, a store that cannot be
written, malformed credentials) ends the command with one line naming the fix and exit code 2, never a
traceback. Problems that appear later (the broker restarts) leave the server up: health turns
`degraded` and the consumer reconnects.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from celery_flow import __version__
from celery_flow.consumer import DEFAULT_BATCH, DEFAULT_GROUP, tune_gc
from celery_flow.errors import ConfigError
from celery_flow.transport import from_url, redact_url
from celery_flow.transport.base import TransportError
from celery_flow.transport.urls import kind_of, with_sqs_options

if TYPE_CHECKING:
    from celery_flow.server.config import ServerConfig
    from celery_flow.server.runtime import Runtime
    from celery_flow.store.base import Store
    from celery_flow.store.migrations import MigrateMode
    from celery_flow.store.sql import SqlStore

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


# ---- options: declared once, composed per command ------------------------------------------------

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)

# Every option of every command: (flags, click.option settings). Commands pick theirs with `options()`.
OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "broker_url": (("--broker-url", "-b"), {
        "metavar": "URL", "help": "Broker the events travel through (redis://, amqp://...). "
                                  "Env: CELERY_FLOW_BROKER_URL."}),
    "store": (("--store", "-s"), {
        "metavar": "URL", "help": "sqlite:///path.db or postgresql://... Env: CELERY_FLOW_STORE. "
                                  "Default: a SQLite file in the user data directory."}),
    "prefix": (("--prefix",), {
        "help": "Stream/exchange prefix (must match init()). Env: CELERY_FLOW_PREFIX. "
                "Default: celery_flow."}),
    "ttl": (("--ttl",), {
        "metavar": "DURATION", "help": "Delete tasks older than this (3600, 30m, 24h, 7d; 0 keeps "
                                       "everything). Env: CELERY_FLOW_TTL. Default: 1 day."}),
    "max_tasks": (("--max-tasks",), {
        "type": click.IntRange(min=1),
        "help": "Keep at most this many tasks (oldest deleted first). Env: CELERY_FLOW_MAX_TASKS."}),
    "stuck_after": (("--stuck-after",), {
        "metavar": "DURATION", "help": "Flag a task stuck once it has run this long (90s, 30m, 2h), "
        "whatever its name's history says. Env: CELERY_FLOW_STUCK_AFTER. Default: off (history only)."}),
    "schedule_grace": (("--schedule-grace",), {
        "metavar": "DURATION", "help": "Flag a beat schedule entry late once its next run is this overdue "
        "(30s, 5m). Env: CELERY_FLOW_SCHEDULE_GRACE. Default: 60s."}),
    "metrics_max_names": (("--metrics-max-names",), {
        "type": click.IntRange(min=1), "metavar": "N",
        "help": "Task names labelled in /metrics (most finished first); the rest count as name=\"other\". "
        "Env: CELERY_FLOW_METRICS_MAX_NAMES. Default: 100."}),
    "host": (("--host",), {"default": DEFAULT_HOST, "show_default": True, "help": "Interface to listen on."}),
    "port": (("--port", "-p"), {
        "type": click.IntRange(1, 65535), "default": DEFAULT_PORT, "show_default": True}),
    "reload": (("--reload",), {"is_flag": True, "help": "Restart on code changes (development)."}),
    "no_consumer": (("--no-consumer",), {
        "is_flag": True, "help": "Do not fold events in this process (a separate "
        "`celery-flow consume` does). Env: CELERY_FLOW_EMBEDDED_CONSUMER=0."}),
    "basic_auth": (("--basic-auth",), {
        "metavar": "USER:PASS",
        "help": "Require HTTP basic auth on every route. Env: CELERY_FLOW_BASIC_AUTH."}),
    "log_level": (("--log-level",), {"default": "info", "show_default": True, "type": LOG_LEVELS}),
    "otlp_endpoint": (("--otlp-endpoint",), {
        "metavar": "URL", "help": "Export finished tasks as OpenTelemetry spans over OTLP/HTTP, e.g. "
        "http://localhost:4318. Env: OTEL_EXPORTER_OTLP_ENDPOINT. Needs `pip install 'celery-flow[otlp]'`."}),
    "name": (("--name",), {"help": "Consumer name in the group. Default: {hostname}:{pid}."}),
    "group": (("--group",), {
        "default": DEFAULT_GROUP, "show_default": True, "help": "Consumer group shared by consumers."}),
    "batch": (("--batch",), {
        "type": click.IntRange(1, 10_000), "default": DEFAULT_BATCH, "show_default": True}),
    "dry_run": (("--dry-run",), {
        "is_flag": True, "help": "Print what would be done and how many rows it touches; write nothing."}),
    "rate": (("--rate",), {
        "type": click.FloatRange(min=0.05), "default": 1.0, "show_default": True,
        "help": "Workflows started per second."}),
}  # fmt: skip

# The settings `server_config()` resolves, and the options of each kind of command.
SETTINGS = ("broker_url", "store", "prefix", "ttl", "max_tasks", "stuck_after", "schedule_grace")
SERVER = (
    *SETTINGS,
    "host",
    "port",
    "no_consumer",
    "basic_auth",
    "log_level",
    "otlp_endpoint",
    "metrics_max_names",
)
CONSUME = (*SETTINGS, "name", "group", "batch", "log_level", "otlp_endpoint")


def options(*names: str, **overrides: dict[str, Any]) -> Callable[[F], F]:
    """Decorate a command with the named OPTIONS, listed in that order in its --help; `overrides` change
    some settings of one option, e.g. `store={"help": ...}`."""

    def decorate(func: F) -> F:
        for name in reversed(names):
            flags, settings = OPTIONS[name]
            func = click.option(*flags, name, **{**settings, **overrides.get(name, {})})(func)
        return func

    return decorate


# --broker-url, --store, --prefix, --ttl, --max-tasks, --stuck-after, --schedule-grace: for a command
# resolving a ServerConfig.
common_options = options(*SETTINGS)


def server_config(no_consumer: bool | None = None, **settings: Any) -> ServerConfig:
    """The options (as click passes them) resolved by `server.config.resolve` into the one ServerConfig;
    exit 2 on a bad value."""
    from celery_flow.server.config import resolve

    try:
        return resolve(embedded_consumer=False if no_consumer else None, **settings)
    except ValueError as exc:  # ConfigError is a ValueError
        fail(_one_line(exc))


# ---- checks: every fixable startup problem is one line and exit 2 ---------------------------------


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


def open_store_or_fail(
    store_url: str, migrate: MigrateMode = "auto", stuck_after: float | None = None
) -> Store:
    """Open (creating or migrating if needed) the store, or exit 2 with the store's one-line reason and
    fix; `migrate` and `stuck_after` as open_store() takes them."""
    from celery_flow.store import open_store

    try:
        return open_store(store_url, migrate=migrate, stuck_after=stuck_after)
    except Exception as exc:
        store_failed(store_url, exc)


def open_or_fail(runtime: Runtime) -> Runtime:
    """`runtime` opened (the store, then the sinks), or exit 2 with the one-line reason and fix."""
    try:
        runtime.open()
    except Exception as exc:
        store_failed(runtime.config.store_url, exc)
    return runtime


def store_failed(store_url: str, exc: Exception) -> NoReturn:
    """Exit 2 with one line naming the fix for a store that could not be opened."""
    from celery_flow.store.base import StoreError

    if isinstance(exc, StoreError):
        fail(f"cannot open the store {redact_url(store_url)}: {_one_line(exc)}")
    if isinstance(exc, ConfigError):
        fail(_one_line(exc))
    # A driver error we did not anticipate: still one line, still the fix.
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


@main.command("server")
@options(*SERVER, "reload")
def server_command(host: str, port: int, reload: bool, log_level: str, **settings: Any) -> None:
    """Serve the UI and API; by default also fold the broker's events into the store."""
    run_server(server_config(**settings), host, port, log_level, reload)


@main.command("consume")
@options(*CONSUME)
def consume_command(name: str | None, group: str, batch: int, log_level: str, **settings: Any) -> None:
    """Fold the broker's events into the store, without serving HTTP (scale these out)."""
    run_consume(server_config(**settings), name, group, batch, log_level)


@main.command("migrate")
@options("store", "dry_run")
def migrate_command(store: str | None, dry_run: bool) -> None:
    """Bring a store an older celery-flow wrote to this version's schema, re-fold of every task included.

    The server and `consume` do the same by themselves when they open an older store (the re-fold then
    runs in the background); this runs it all now, in the foreground, for a rollout that wants it done
    before the new version starts.
    """
    run_migrate(server_config(store=store).store_url, dry_run)


DEMO_STORE_HELP = "Where to keep the demo's data. Default: a fresh SQLite file in a temporary directory."


@main.command("demo")
@options("host", "port", "store", "rate", store={"help": DEMO_STORE_HELP})
def demo_command(host: str, port: int, store: str | None, rate: float) -> None:
    """Run an in-process Celery app producing realistic workflows and serve the UI (no broker needed)."""
    run_demo(host, port, store, rate)


MCP_STORE_HELP = (
    "The store to read (as `server` takes it). Env: CELERY_FLOW_STORE. Default: the server's default."
)
MCP_NEEDS = "celery-flow mcp needs the `mcp` package: pip install 'celery-flow[mcp]'"


@main.command("mcp")
@options("store", "stuck_after", store={"help": MCP_STORE_HELP})
@click.option(
    "--server",
    "server_url",
    metavar="URL",
    help="Read through a running celery-flow server instead (http://host:8000, or its /mcp URL).",
)
@click.option(
    "--basic-auth",
    metavar="USER:PASS",
    help="With --server: its --basic-auth credentials. Env: CELERY_FLOW_BASIC_AUTH.",
)
@click.option(
    "--header",
    "-H",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="With --server: a header sent with each request, e.g. 'Authorization: Bearer ...' (repeatable).",
)
@click.option("--log-level", default="warning", show_default=True, type=LOG_LEVELS)
def mcp_command(store: str | None, stuck_after: str | None, server_url: str | None,
                basic_auth: str | None, headers: tuple[str, ...], log_level: str) -> None:  # fmt: skip
    """Serve celery-flow's read-only MCP tools on stdin/stdout, for desktop assistants (Claude Desktop,
    Cursor...): reading the store, or a running server. Nothing but the protocol goes to stdout."""
    setup_logging(log_level)
    if server_url is not None:
        if store is not None or stuck_after is not None:
            fail("--store and --stuck-after go without --server: the server reads its own store")
        run_mcp_proxy(server_url, basic_auth, headers)
        return
    if basic_auth is not None or headers:
        fail("--basic-auth and --header go with --server (a store is read directly, without HTTP)")
    cfg = server_config(store=store, stuck_after=stuck_after)
    run_mcp_store(cfg.store_url, cfg.stuck_after)


def run_mcp_store(url: str, stuck_after: float | None) -> None:
    from celery_flow.store import sqlite_path

    try:
        from celery_flow.server.mcp.protocol import run_stdio
    except ImportError as exc:
        _mcp_missing(exc)
    from celery_flow.store.base import StoreError

    try:
        missing = url.lower().startswith("sqlite:") and not os.path.exists(sqlite_path(url))
    except StoreError as exc:
        fail(_one_line(exc))
    if missing:
        fail(f"no store at {redact_url(url)}: pass the --store the server writes (or CELERY_FLOW_STORE)")
    store = open_store_or_fail(url, stuck_after=stuck_after)
    try:
        run_stdio(store)
    finally:
        store.close()


def run_mcp_proxy(server_url: str, basic_auth: str | None, raw_headers: tuple[str, ...]) -> None:
    from urllib.parse import urlsplit

    from celery_flow.server.config import parse_credentials

    try:
        from celery_flow.server.mcp.protocol import RemoteRefused, run_stdio_proxy
    except ImportError as exc:
        _mcp_missing(exc)
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        fail(f"--server takes the server's URL, e.g. http://127.0.0.1:8000, not {server_url!r}")
    url = server_url.rstrip("/")
    url = url if url.endswith("/mcp") else url + "/mcp"
    headers: dict[str, str] = {}
    for raw in raw_headers:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip() or not value.strip():
            fail(f"--header takes 'Name: value', not {raw!r}")
        headers[name.strip()] = value.strip()
    basic_auth = basic_auth if basic_auth is not None else os.environ.get("CELERY_FLOW_BASIC_AUTH")
    if basic_auth:
        try:
            user, password = parse_credentials(basic_auth)
        except ConfigError as exc:
            fail(_one_line(exc))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers.setdefault("Authorization", f"Basic {token}")
    try:
        run_stdio_proxy(url, headers)
    except RemoteRefused as exc:
        fail(f"cannot use the celery-flow server at {redact_url(url)}: {exc}")
    except Exception as exc:
        fail(f"cannot use the celery-flow server at {redact_url(url)}: {_innermost(exc)}")


def _innermost(exc: BaseException) -> str:
    """The first leaf of an exception group (what task groups raise), as one line."""
    leaves = getattr(exc, "exceptions", None)
    while leaves:
        exc = leaves[0]
        leaves = getattr(exc, "exceptions", None)
    if exc.__context__ is not None and not str(exc):
        exc = exc.__context__
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _mcp_missing(exc: ImportError) -> NoReturn:
    from celery_flow.server.mcp.endpoint import sdk_missing

    if sdk_missing(exc):
        fail(MCP_NEEDS)
    raise exc


def run_server(cfg: ServerConfig, host: str, port: int, log_level: str, reload: bool = False) -> None:
    if cfg.broker_url is None and cfg.embedded_consumer:
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
        check_store(cfg.store_url)
        # The reloader serves from a fresh process that re-imports the app: hand it this config.
        os.environ.update(cfg.to_env())
        _announce(host, port, cfg)
        # Watch celery-flow's own code, the code --reload is for, not the (possibly huge) working directory.
        package = os.path.dirname(os.path.abspath(__file__))
        uvicorn.run("celery_flow.server.app:create_app_from_env", factory=True, host=host, port=port,
                    reload=True, reload_dirs=[package], log_level=log_level.lower())  # fmt: skip
        return

    from celery_flow.server.app import create_app

    app = create_app(config=cfg)
    if cfg.embedded_consumer:
        tune_gc()
    with open_or_fail(app.state.celery_flow.runtime):
        _announce(host, port, cfg)
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level.lower())).run()


def _announce(host: str, port: int, cfg: ServerConfig) -> None:
    shown = _shown(host)
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


def _shown(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host  # noqa: S104 - only for display


def run_consume(cfg: ServerConfig, name: str | None, group: str, batch: int, log_level: str) -> None:
    if cfg.broker_url is None:
        fail("no broker given: pass --broker-url redis://host:6379/0 or set CELERY_FLOW_BROKER_URL")
    check_broker(cfg.broker_url, cfg.prefix)
    setup_logging(log_level)  # before the store opens: a migration logs what it does
    from celery_flow.server.runtime import Runtime

    with open_or_fail(Runtime(cfg, group=group)) as runtime:
        tune_gc()
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        consumer = runtime.consumer_for(name, batch)
        click.echo(
            f"celery-flow consume: broker={redact_url(cfg.broker_url)} store={redact_url(cfg.store_url)} "
            f"prefix={cfg.prefix} group={group} name={consumer.name}",
            err=True,
        )
        consumer.run(stop)


def run_migrate(url: str, dry_run: bool) -> None:
    from celery_flow.store import sqlite_path
    from celery_flow.store.backfill import RefoldProgress, describe
    from celery_flow.store.backfill import run as refold

    if url.lower().startswith("sqlite:") and not os.path.exists(sqlite_path(url)):
        fail(f"no store at {redact_url(url)}: nothing to migrate (check --store / CELERY_FLOW_STORE)")
    setup_logging("warning")
    opened = _sql_store(open_store_or_fail(url, "plan"))
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
    opened = _sql_store(open_store_or_fail(url, "foreground"))
    try:
        applied = [str(step.version) for step in opened.migration.steps]
        if applied:
            steps = "step" if len(applied) == 1 else "steps"
            click.echo(f"applied {steps} {', '.join(applied)}: the schema is up to date")
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


def _sql_store(store: Store) -> SqlStore[Any]:
    """Every store open_store() opens is a SqlStore: the one kind with a schema to migrate."""
    from celery_flow.store.sql import SqlStore

    assert isinstance(store, SqlStore)
    return store


def run_demo(host: str, port: int, store_url: str | None, rate: float) -> None:
    """Serve the UI over the demo app's flows (demo.py) until interrupted; a temporary store by default."""
    import uvicorn

    from celery_flow import demo
    from celery_flow.server.app import create_app
    from celery_flow.server.config import ServerConfig

    check_port(host, port)
    setup_logging("warning")
    exit_cleanly_on_sigterm()
    demo.quiet_expected_failures()
    with contextlib.ExitStack() as stack:
        where = store_url
        if store_url is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="celery-flow-demo-"))
            stack.callback(shutil.rmtree, tmpdir, ignore_errors=True)
            store_url = f"sqlite:///{tmpdir / 'demo.db'}"
            where = "a temporary SQLite file, deleted on exit"
        # The demo's own settings, not the environment's: its in-process broker, kept bounded.
        cfg = ServerConfig(
            broker_url=demo.DEMO_TRANSPORT, store_url=store_url, prefix=demo.DEMO_PREFIX, ttl=None,
            max_tasks=demo.DEMO_MAX_TASKS, basic_auth=None, embedded_consumer=True,
        )  # fmt: skip
        app = create_app(config=cfg)
        stack.enter_context(open_or_fail(app.state.celery_flow.runtime))
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        stack.enter_context(demo.running_demo(rate=rate))
        click.echo(
            f"celery-flow demo: open http://{_shown(host)}:{port}/  (an in-process Celery app starts "
            f"{rate:g} workflow/s; data in {where}; Ctrl+C to stop)",
            err=True,
        )
        server.run()


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
    if url and kind_of(str(url)) == "sqs":  # the app's SQS region and is_secure, as init() takes them
        return with_sqs_options(str(url), app.conf.broker_transport_options or {})
    return str(url) if url else None


@click.group("flow", context_settings={"help_option_names": ["-h", "--help"]})
def celery_command() -> None:
    """celery-flow server and consumer, taking the broker from the Celery app (-A)."""


@celery_command.command("server")
@options(*SERVER)
@click.pass_context
def celery_server(ctx: click.Context, /, host: str, port: int, log_level: str, **settings: Any) -> None:
    """Serve the UI and API for this Celery app."""
    run_server(server_config(**settings, default_broker_url=_app_broker(ctx)), host, port, log_level)


@celery_command.command("consume")
@options(*CONSUME)
@click.pass_context
def celery_consume(
    ctx: click.Context, /, name: str | None, group: str, batch: int, log_level: str, **settings: Any
) -> None:
    """Fold this Celery app's celery-flow events into the store."""
    run_consume(server_config(**settings, default_broker_url=_app_broker(ctx)), name, group, batch, log_level)


if __name__ == "__main__":  # pragma: no cover
    main()
