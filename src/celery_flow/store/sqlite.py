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

from celery_flow.store.backfill import stop_background
from celery_flow.store.base import StoreError
from celery_flow.store.migrations import MigrateMode, open_schema
from celery_flow.store.sql import Row, SqlStore

BUSY_TIMEOUT_MS = 30_000
FIX_HINT = "choose a writable path with --store sqlite:///path/to/flow.db or CELERY_FLOW_STORE"


class _Session:
    __slots__ = ("cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.cursor.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.cursor.execute(sql, params).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cursor.executemany(sql, rows)


class SQLiteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, path: str, migrate: MigrateMode = "auto") -> None:
        super().__init__()
        self.path = path
        self.memory = path == ":memory:"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._registry_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        self._pid = os.getpid()
        if not self.memory:
            directory = os.path.dirname(path) or "."
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {directory} ({exc.strerror}): {FIX_HINT}") from None
        try:
            self.migration = open_schema(self, path, migrate)
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
        with self._registry_lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        if os.getpid() != self._pid:
            # A forked child must not share its parent's SQLite handles: start afresh.
            self._local = threading.local()
            self._connections = []
            self._pid = os.getpid()
        if self.memory:
            with self._registry_lock:
                if self._connections:
                    return self._connections[0]
            return self._connect()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def _read(self) -> Iterator[_Session]:
        conn = self._conn()
        try:
            if self.memory:
                with self._write_lock:
                    yield _Session(conn.cursor())
            else:
                yield _Session(conn.cursor())
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @contextmanager
    def _write(self) -> Iterator[_Session]:
        conn = self._conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            try:
                yield _Session(conn.cursor())
                conn.execute("COMMIT")
            except BaseException as exc:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(exc) from None
                raise

    def _error(self, exc: sqlite3.Error) -> StoreError:
        message = str(exc)
        if "full" in message:  # SQLITE_FULL: the path is fine, the disk is not
            return StoreError(
                f"cannot write {self.path} ({message}): free space on its disk, or move the store "
                "with --store / CELERY_FLOW_STORE; ingest resumes by itself once writes succeed"
            )
        if "readonly" in message or "unable to open" in message or "disk" in message:
            return StoreError(f"cannot write {self.path} ({message}): {FIX_HINT}")
        return StoreError(f"SQLite store {self.path}: {message}")

    def close(self) -> None:
        stop_background(self)
        self._closed = True
        with self._registry_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with suppress(sqlite3.Error):
                conn.close()


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
