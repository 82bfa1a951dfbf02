"""PostgreSQL databases of a test's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from celery_flow.store.sql import SqlStore

__all__ = ["own_database", "own_sql_store", "own_store_url"]


@contextlib.contextmanager
def own_database(server_url: str, name: str) -> Iterator[str]:
    """The URL of database `name`, created on the server at `server_url` (postgresql://user@host:port)
    and dropped afterwards, its connections closed by force."""
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def own_store_url(kind: str, request: pytest.FixtureRequest, tmp: Path) -> Iterator[str]:
    """A fresh SQLite file in `tmp`, or (kind "postgresql") a PostgreSQL schema of its own in the run's
    database (the `pg_url` fixture), dropped when the generator closes."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'flow.db'}"
        return
    import uuid

    import psycopg

    pg_url = str(request.getfixturevalue("pg_url"))
    schema = f"f_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def own_sql_store(kind: str, request: pytest.FixtureRequest, tmp: Path) -> Iterator[SqlStore[Any]]:
    """An open store on `own_store_url(kind, ...)`, closed and dropped when the generator closes."""
    from celery_flow.store import open_store
    from celery_flow.store.sql import SqlStore

    urls = own_store_url(kind, request, tmp)
    store = open_store(next(urls))
    assert isinstance(store, SqlStore)
    try:
        yield store
    finally:
        store.close()
        urls.close()
