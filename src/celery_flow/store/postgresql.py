"""PostgreSQL engine (psycopg 3): a shared store for several hosts and long history.

Each thread keeps its own connection (psycopg connections are not for concurrent use), reopened after
a failure. Writers serialize on the `meta.seq` row (`SELECT ... FOR UPDATE` first thing in every write
transaction), so change numbers are handed out in commit order: a reader tailing `seq > cursor` can never
pass a change that commits later with a smaller number, however many `consume` processes write at once.
The cost is that folds of concurrent writers do not overlap; decoding, network reads and acks still do.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.store.base import StoreError
from celery_flow.store.connection import Row, Session
from celery_flow.store.migrations import MigrateMode
from celery_flow.store.sql import SqlStore

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the installation
    psycopg = None  # type: ignore[assignment]

CONNECT_TIMEOUT = 5
FIX_HINT = "check the URL given to --store / CELERY_FLOW_STORE and that PostgreSQL is running"
# What to do about a failed statement, by SQLSTATE (or its class): only a lost or refused connection is
# about the URL; a lock held too long, a read-only standby or a full disk each need something else done.
_HINTS = {
    "08": FIX_HINT,  # connection exception
    "57": FIX_HINT,  # operator intervention: the server is shutting down or restarting
    "53": "PostgreSQL is out of disk space, memory or connections: free some",
    "25006": "the database is read-only (a standby, or default_transaction_read_only): point --store / "
    "CELERY_FLOW_STORE at a writable primary",
    "42501": "the store's user lacks privileges on its tables: grant them, or give celery-flow a "
    "database of its own",
    "55P03": "another session held a lock on the store's tables for over 30 s (a long manual query or "
    "migration?): end it",
    "40": "a concurrent transaction conflicted with this one (transient: the next try should pass)",
}
_PLACEHOLDER = re.compile(r"\?")
_translated: dict[str, str] = {}
_PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \([?, ]+\)$")


def _sql(statement: str) -> str:
    """`?` placeholders (the shared SQL) to psycopg's `%s`."""
    out = _translated.get(statement)
    if out is None:
        out = _PLACEHOLDER.sub("%s", statement)
        if len(_translated) < 4096:
            _translated[statement] = out
    return out


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class _Session:
    dialect = "postgresql"
    __slots__ = ("conn",)

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.conn.cursor() as cur:
            cur.execute(_sql(sql), params)
            return list(cur.fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.conn.cursor() as cur:
            cur.execute(_sql(sql), params)
            return int(cur.rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        plain_insert = _PLAIN_INSERT.match(sql)
        with self.conn.cursor() as cur:
            if plain_insert is not None and len(rows) > 8:
                # COPY: one stream instead of one statement per row.
                table, columns = plain_insert.groups()
                with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                cur.executemany(_sql(sql), rows)


def error_hint(sqlstate: str | None) -> str:
    """The fix to name for an error with this SQLSTATE (None: no server answer, the connection failed)."""
    if sqlstate is None:
        return FIX_HINT
    return _HINTS.get(sqlstate) or _HINTS.get(sqlstate[:2]) or f"SQLSTATE {sqlstate}"


class PostgresStore(SqlStore[Any]):
    dialect = "postgresql"
    lock_suffix = " FOR UPDATE"
    driver_errors = (psycopg.Error,) if psycopg is not None else ()

    def __init__(
        self,
        url: str,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        *,
        migrate: MigrateMode = "auto",
        stuck_after: float | None = None,
        schedule_grace: float | None = None,
    ) -> None:
        super().__init__(heartbeat_interval, stuck_after, schedule_grace)
        if psycopg is None:
            raise StoreError("PostgreSQL support needs psycopg: pip install 'celery-flow[postgres]'")
        self.url = url
        self.open_schema(f"PostgreSQL at {redact(url)}", migrate)

    def _connect(self) -> Any:
        assert psycopg is not None
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
            # A writer stuck mid-transaction (its host froze, its network dropped) holds the write lock:
            # the server ends such a transaction after a minute, and other writers give up waiting after
            # 30 s with an error the consumer retries, instead of hanging forever.
            conn.execute("SET lock_timeout = '30s'")
            conn.execute("SET idle_in_transaction_session_timeout = '60s'")
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"cannot connect to PostgreSQL at {redact(self.url)} ({detail}): {FIX_HINT}"
            ) from None
        return conn

    def _usable(self, conn: Any) -> bool:
        return not (conn.closed or conn.broken)

    def _lost(self, exc: Exception) -> bool:
        return psycopg is not None and isinstance(exc, psycopg.OperationalError)

    def _session(self, conn: Any) -> Session:
        return _Session(conn)

    def _transaction(self, conn: Any) -> AbstractContextManager[Any]:
        return conn.transaction()  # type: ignore[no-any-return]

    def _error(self, exc: Exception) -> StoreError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(
            f"PostgreSQL at {redact(self.url)}: {detail}: {error_hint(getattr(exc, 'sqlstate', None))}"
        )
