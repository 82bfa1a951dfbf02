"""Store URLs, cursors and the schema text: the pure parts of the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.support.events import event

from celery_flow.store import StoreError, default_store_url, open_store, sqlite_path
from celery_flow.store.queries import decode_cursor, encode_cursor
from celery_flow.store.rows import FlowRow, NameStatsRow, TaskRow, WorkerRow
from celery_flow.store.schema import FLOW_COLUMNS, STATE_COLUMNS, TASK_COLUMNS, WORKER_COLUMNS, ddl
from celery_flow.store.search import DDL as SEARCH_DDL
from celery_flow.store.sqlite import SQLiteStore


def test_sqlite_urls_name_files() -> None:
    assert sqlite_path("sqlite:///var/lib/flow.db") == "/var/lib/flow.db"
    assert sqlite_path("sqlite:////var/lib/flow.db") == "/var/lib/flow.db"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"
    with pytest.raises(StoreError, match="absolute path"):
        sqlite_path("sqlite://relative.db")


def test_default_store_is_a_file_in_the_user_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    url = default_store_url()
    assert url == f"sqlite://{tmp_path}/celery-flow/celery-flow.db"  # sqlite:/// + absolute path
    store = open_store(None)
    try:
        assert isinstance(store, SQLiteStore)
        assert Path(store.path).exists()
    finally:
        store.close()


def test_cursor_round_trip_and_garbage() -> None:
    cursor = encode_cursor(1700000000.25, "abc")
    assert decode_cursor(cursor) == (1700000000.25, "abc")
    for bad in ("", "!!!", "eyJ4IjoxfQ", encode_cursor(1.0, "x")[:-3]):
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(bad)


def test_schema_creates_in_sqlite_and_differs_only_in_types_and_the_search_index() -> None:
    conn = sqlite3.connect(":memory:")
    for statement in ddl("sqlite"):
        conn.execute(statement)
    sqlite_lines, pg_lines = ddl("sqlite"), ddl("postgresql")
    assert sqlite_lines[-len(SEARCH_DDL["sqlite"]) :] == list(SEARCH_DDL["sqlite"])
    assert pg_lines[-len(SEARCH_DDL["postgresql"]) :] == list(SEARCH_DDL["postgresql"])
    assert len(sqlite_lines) - len(SEARCH_DDL["sqlite"]) == len(pg_lines) - len(SEARCH_DDL["postgresql"])
    assert "BYTEA" in " ".join(pg_lines)
    assert "BLOB" in " ".join(sqlite_lines)


def test_row_types_name_the_schema_columns_in_order() -> None:
    """Rows are read by name: each row type is the column list its table is written with."""
    assert TaskRow._fields == TASK_COLUMNS
    assert FlowRow._fields == FLOW_COLUMNS
    assert WorkerRow._fields == WORKER_COLUMNS
    assert NameStatsRow._fields == ("name", *STATE_COLUMNS.values())


def test_store_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('seq', 5)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="point --store / CELERY_FLOW_STORE at a new file"):
        open_store(f"sqlite:///{path}")


def test_memory_store_is_usable_from_several_threads() -> None:
    import threading

    from celery_flow.store import TaskFilter

    store = open_store("sqlite:///:memory:")
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(20):
                store.apply([event("sent", f"{k}-{i}", float(i))])
                store.list_tasks(TaskFilter(), 5, None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.stats().tasks == 80
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.ping()


def test_postgresql_error_hints_follow_the_sqlstate() -> None:
    from celery_flow.store.postgresql import FIX_HINT, error_hint

    assert error_hint(None) == FIX_HINT  # no answer from a server: the URL or the server
    assert error_hint("08006") == FIX_HINT  # connection failure
    assert error_hint("57P01") == FIX_HINT  # admin shutdown
    assert "lock" in error_hint("55P03")
    assert "30 s" in error_hint("55P03")
    assert "disk space" in error_hint("53100")
    assert "writable primary" in error_hint("25006")
    assert "writable primary" not in error_hint("25P02")  # an aborted transaction is not a standby
    assert "privileges" in error_hint("42501")
    assert "transient" in error_hint("40P01")
    assert error_hint("XX000") == "SQLSTATE XX000"
