"""SQLite engine: the embedded default, one file shared by a `consume` and a `server` process on one host.

WAL mode lets readers run while one writer commits; `busy_timeout` makes a second process's writer wait
instead of failing. Inside one process each thread gets its own connection (FastAPI runs sync endpoints
in a threadpool; the live poller and the embedded consumer are other threads), and writers also take a
process-local lock so they queue in Python rather than spin in SQLite's busy handler.
`:memory:` (tests) is one connection behind one lock, since every new connection would be a new database.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.store.base import StoreError
from celery_flow.store.connection import Row, Session
from celery_flow.store.migrations import MigrateMode
from celery_flow.store.sql import SqlStore

BUSY_TIMEOUT_MS = 30_000
FIX_HINT = "choose a writable path with --store sqlite:///path/to/flow.db or CELERY_FLOW_STORE"


class _Session:
    dialect = "sqlite"
    __slots__ = ("cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.cursor.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.cursor.execute(sql, params).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cursor.executemany(sql, rows)


class SQLiteStore(SqlStore[sqlite3.Connection]):
    dialect = "sqlite"
    driver_errors = (sqlite3.Error,)

    def __init__(
        self,
        path: str,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        *,
        migrate: MigrateMode = "auto",
        stuck_after: float | None = None,
        schedule_grace: float | None = None,
    ) -> None:
        super().__init__(heartbeat_interval, stuck_after, schedule_grace)
        self.path = path
        self.memory = path == ":memory:"
        self._shared = self.memory
        # Writers queue here rather than spin in SQLite's busy handler; `:memory:` readers too, since
        # they share the writers' one connection.
        self._write_lock = threading.RLock()
        if self.memory:
            self._read_lock = self._write_lock
        else:
            directory = os.path.dirname(path) or "."
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {directory} ({exc.strerror}): {FIX_HINT}") from None
        try:
            self.open_schema(path, migrate)
        except StoreError:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            if not self.memory:
                _enable_wal(conn)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # WAL + NORMAL: a commit survives a process crash; only an OS crash may lose the last commits,
            # which the broker re-delivers (acks happen after commit).
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            conn.execute("PRAGMA temp_store=MEMORY")
            # Checkpoint (and fsync) the WAL every ~40 MB rather than every 4 MB: fewer ingest stalls.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            conn.execute("PRAGMA journal_size_limit=67108864")  # ...and truncate it back to 64 MB after
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path} ({exc}): {FIX_HINT}") from None
        return conn

    def _session(self, conn: sqlite3.Connection) -> Session:
        return _Session(conn.cursor())

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _error(self, exc: Exception) -> StoreError:
        message = str(exc)
        if "full" in message:  # SQLITE_FULL: the path is fine, the disk is not
            return StoreError(
                f"cannot write {self.path} ({message}): free space on its disk, or move the store "
                "with --store / CELERY_FLOW_STORE; ingest resumes by itself once writes succeed"
            )
        if "readonly" in message or "unable to open" in message or "disk" in message:
            return StoreError(f"cannot write {self.path} ({message}): {FIX_HINT}")
        return StoreError(f"SQLite store {self.path}: {message}")


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, waiting while another process holds the file (two processes opening a new store at
    once): SQLite answers "database is locked" here at once instead of using the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
