"""PostgreSQL databases of a test's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["own_database"]


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
