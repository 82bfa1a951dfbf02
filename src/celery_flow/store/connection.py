"""Connections and sessions, shared by both engines: how a statement reaches the database.

`SqlConnections` keeps one connection per thread (a fresh set after a fork), hands out read sessions
(autocommit) and write sessions (one transaction), maps driver errors to StoreError through the
engine's `_error`, and retries a read once when a connection that worked before went stale. The engines
(sqlite.py, postgresql.py) hold only what differs: opening a connection, beginning and ending a
transaction, and what an error means.

Every statement is written once with `?` placeholders in the common subset of both SQL dialects.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from celery_flow.store.base import StoreError

R = TypeVar("R")
C = TypeVar("C", bound="_Connection")
Row = tuple[Any, ...]

# Rows per `IN (...)` list: far below SQLite's 32766-variable limit and PostgreSQL's 65535.
CHUNK = 900


class Session(Protocol):
    """One connection inside one transaction (writes) or in autocommit (reads)."""

    # The engine: "sqlite" or "postgresql" (the few statements written per engine, store/search.py).
    dialect: str

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; return the number of rows it changed."""
        ...

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class _Connection(Protocol):
    def close(self) -> None: ...


class StaleConnection(Exception):
    """A connection that worked before failed: the server restarted or the network dropped it."""


def in_list(values: Sequence[Any]) -> str:
    """`(?, ?, ...)`, one placeholder per value."""
    return "(" + ", ".join("?" for _ in values) + ")"


def chunks(values: Sequence[R], size: int = CHUNK) -> Iterator[Sequence[R]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def select_in(session: Session, sql: str, values: Sequence[Any], extra: Sequence[Any] = ()) -> list[Row]:
    """Run `sql` (with one `{}` standing for an `IN (...)` list) over `values` in chunks."""
    out: list[Row] = []
    for chunk in chunks(values):
        out.extend(session.rows(sql.format(in_list(chunk)), [*chunk, *extra]))
    return out


def meta_value(session: Session, key: str) -> int:
    """One store-wide number from `meta` (the change counter `seq`, row counts, last numbers given)."""
    return int(session.rows("SELECT value FROM meta WHERE key = ?", (key,))[0][0])


class SqlConnections(ABC, Generic[C]):
    """Per-thread connections to one database, and the read and write sessions over them."""

    dialect: ClassVar[str] = ""
    # Appended to the first statement of a write transaction: locks the change counter row (PostgreSQL).
    lock_suffix: ClassVar[str] = ""
    # The driver's exceptions: mapped to StoreError by `_error`.
    driver_errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._local = threading.local()
        self._connections: list[C] = []
        self._registry_lock = threading.Lock()
        # Taken around each write transaction (and around reads, when every thread shares one
        # connection); a no-op unless the engine sets one.
        self._write_lock: AbstractContextManager[Any] = nullcontext()
        self._read_lock: AbstractContextManager[Any] = nullcontext()
        # One connection for every thread (SQLite `:memory:`, where a new connection is a new database).
        self._shared = False
        self._used: set[int] = set()  # ids of connections a read succeeded on
        self._closed = False
        self._pid = os.getpid()

    # -- engine hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> C:
        """A new, configured connection; StoreError naming the fix when it cannot be opened."""

    @abstractmethod
    def _session(self, conn: C) -> Session: ...

    @abstractmethod
    def _transaction(self, conn: C) -> AbstractContextManager[Any]:
        """Begin a transaction; commit when the block exits normally, roll back otherwise."""

    @abstractmethod
    def _error(self, exc: Exception) -> StoreError:
        """The one-line StoreError for a driver error, naming what to do about it."""

    def _usable(self, conn: C) -> bool:
        """False for a connection known to be closed or broken: it is replaced before use."""
        return True

    def _lost(self, exc: Exception) -> bool:
        """True when `exc` means the connection itself failed: it is dropped (and a read retried)."""
        return False

    # -- connections ----------------------------------------------------------------------------

    def _conn(self) -> C:
        if self._closed:
            raise StoreError("the store is closed")
        if os.getpid() != self._pid:
            # A forked child must not share its parent's connections: start afresh.
            self._local = threading.local()
            self._connections = []
            self._used = set()
            self._pid = os.getpid()
        if self._shared:
            with self._registry_lock:
                if self._connections:
                    return self._connections[0]
            return self._register(self._connect())
        conn: C | None = getattr(self._local, "conn", None)
        if conn is None or not self._usable(conn):
            if conn is not None:
                self._discard(conn)
            conn = self._register(self._connect())
            self._local.conn = conn
        return conn

    def _register(self, conn: C) -> C:
        with self._registry_lock:
            self._connections.append(conn)
        return conn

    def _discard(self, conn: C) -> None:
        with self._registry_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        self._used.discard(id(conn))
        with suppress(Exception):
            conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def close(self) -> None:
        self._closed = True
        with self._registry_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            with suppress(Exception):
                conn.close()

    # -- sessions -------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A session for reads (autocommit: each statement sees the latest commit)."""
        conn = self._conn()
        reused = id(conn) in self._used
        try:
            with self._read_lock:
                yield self._session(conn)
            self._used.add(id(conn))
        except self.driver_errors as exc:
            if self._lost(exc):
                self._discard(conn)
                if reused:
                    raise StaleConnection(str(exc)) from None
            raise self._error(exc) from None

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A session inside a write transaction, committed when the block exits normally."""
        conn = self._conn()
        with self._write_lock:
            try:
                with self._transaction(conn):
                    yield self._session(conn)
            except self.driver_errors as exc:
                if self._lost(exc):
                    self._discard(conn)
                raise self._error(exc) from None

    def _reading(self, call: Callable[[Session], R]) -> R:
        """`call(session)` on a read session, retried once on a fresh connection if a used one went stale."""
        try:
            with self._read() as session:
                return call(session)
        except StaleConnection:
            with self._read() as session:
                return call(session)

    def _writing(self, call: Callable[[Session, int], R]) -> R:
        """`call(session, seq)` in one write transaction, `seq` the change counter as it starts.

        Writers are serialized (SQLite: BEGIN IMMEDIATE; PostgreSQL: the `meta.seq` row is locked first
        thing), so `seq` grows in commit order: a reader tailing `seq > cursor` never skips a row that
        commits late, and two writers never fold the same task from different partial event sets.
        """
        with self._write() as session:
            seq = int(session.rows("SELECT value FROM meta WHERE key = 'seq'" + self.lock_suffix)[0][0])
            return call(session, seq)
