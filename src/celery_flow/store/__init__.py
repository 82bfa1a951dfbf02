"""Opening a store from its URL: the one way the server, the consumer and the CLI get a Store."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from celery_flow.events import DEFAULT_HEARTBEAT_INTERVAL
from celery_flow.store.base import Store, StoreError, StoreStats, TaskFilter

if TYPE_CHECKING:
    from celery_flow.store.migrations import MigrateMode

__all__ = ["Store", "StoreError", "StoreStats", "TaskFilter", "default_store_url", "open_store"]


def default_store_url() -> str:
    """`sqlite:///<user data dir>/celery-flow.db` (platformdirs), e.g. ~/.local/share/celery-flow/."""
    import platformdirs

    return "sqlite:///" + os.path.join(platformdirs.user_data_dir("celery-flow"), "celery-flow.db").lstrip(
        "/"
    )


def sqlite_path(url: str) -> str:
    """The file of a `sqlite:///abs/path.db` URL (`sqlite:////abs/path.db` is accepted too)."""
    rest = url[len("sqlite://") :]
    if rest in ("", "/", "/:memory:", ":memory:"):
        return ":memory:"
    if not rest.startswith("/"):
        raise StoreError(f"store URL {url!r} needs an absolute path: sqlite:///path/to/flow.db")
    while rest.startswith("//"):
        rest = rest[1:]
    return rest


def open_store(
    url: str | None = None,
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
    *,
    migrate: MigrateMode = "auto",
    stuck_after: float | None = None,
    schedule_grace: float | None = None,
) -> Store:
    """The store at `url` (None: the default SQLite file), created if missing, migrated if older
    (store/migrations.py; `migrate` says how). `heartbeat_interval` is assumed for workers that do not
    announce theirs; a task running longer than `stuck_after` seconds is stuck (store/stuck.py); a schedule
    entry whose next run is overdue by more than `schedule_grace` seconds is late (store/schedules.py).

    Raises StoreError with a one-line message naming the fix when it cannot be opened.
    """
    if url is None or not url.strip():
        url = default_store_url()
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from celery_flow.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), heartbeat_interval, migrate=migrate, stuck_after=stuck_after,
                            schedule_grace=schedule_grace)  # fmt: skip
    if scheme in ("postgresql", "postgres"):
        from celery_flow.store.postgresql import PostgresStore

        return PostgresStore(
            url, heartbeat_interval, migrate=migrate, stuck_after=stuck_after, schedule_grace=schedule_grace
        )
    raise StoreError(
        f"unknown store URL {url!r}: use sqlite:///path/to/flow.db or postgresql://user@host/db "
        "(--store or CELERY_FLOW_STORE)"
    )
