"""The store stops accepting writes while events keep coming: a full disk (SQLite), a read-only database
(PostgreSQL failing over to a read-only replica). The server must say so clearly in /api/health, keep
serving what it has, keep every event it could not write unacknowledged in the stream, and catch up by
itself once the fault is gone.

How the faults are made, and why these (tests may run as root, where `chmod 444` stops nothing):

- Disk full: the SQLite file lives on a private tmpfs mounted with a small `size=`; a filler file takes
  the remaining space (SQLite then fails with SQLITE_FULL), deleting it is the repair. Mounting needs
  CAP_SYS_ADMIN: without it the test is skipped with the reason.
- Read-only: a read-only remount of that tmpfs is refused while SQLite holds the file open for writing
  (EBUSY), so the read-only case uses PostgreSQL: `ALTER DATABASE ... SET default_transaction_read_only`
  plus terminating the sessions, exactly what clients see when a primary fails over to a read-only
  replica. The repair resets the setting and terminates the sessions again (failing back).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from celery_flow.events import encode
from celery_flow.transport import from_url
from tests.support.events import event
from tests.support.postgres import own_database
from tests.support.server_helpers import cli_process, free_port
from tests.support.wait import wait_for

pytestmark = pytest.mark.timeout(150)


def _publish_tasks(redis_url: str, prefix: str, count: int, payload: int = 0) -> list[str]:
    """`count` finished tasks (4 events each) written to the stream; `payload` bytes of args each."""
    transport = from_url(redis_url, prefix=prefix)
    ids = [uuid.uuid4().hex for _ in range(count)]
    blob = "x" * payload
    try:
        batch: list[bytes] = []
        for i, task_id in enumerate(ids):
            now = time.time()
            common: dict[str, Any] = {"name": "app.faulty", "root_id": task_id}
            for dt, type_, extra in (
                (0.0, "sent", {"args": [i, blob]}),
                (0.001, "received", {"hostname": "celery@w"}),
                (0.002, "started", {"hostname": "celery@w", "pid": 3}),
                (0.003, "succeeded", {"hostname": "celery@w", "pid": 3, "runtime": 0.001, "result": blob}),
            ):
                batch.append(encode(event(type_, task_id, now + dt, **common, **extra)))
            if len(batch) >= 400:
                transport.publish(batch)
                batch = []
        transport.publish(batch)
    finally:
        transport.close()
    return ids


def _count_done(client: httpx.Client) -> int:
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 500, "name": "app.faulty", "state": "SUCCESS"}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/tasks", params=params).json()
        total += len(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return total


def _health(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/health")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A private 64 MiB tmpfs, unmounted afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cf_small_disk_"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        path.rmdir()
        pytest.skip(
            f"cannot mount a tmpfs to simulate a full disk (needs CAP_SYS_ADMIN): {proc.stderr.strip()}"
        )
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
        with contextlib.suppress(OSError):
            path.rmdir()


def _fill(directory: Path) -> Path:
    """Take every free byte of the filesystem holding `directory`."""
    filler = directory / "filler.bin"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    return filler


def test_disk_full_sqlite_store_reports_keeps_serving_and_recovers(
    redis_url: str, unique_prefix: str, small_disk: Path, tmp_path: Path, redis_client: Any
) -> None:
    port = free_port()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    args = ["server", "--broker-url", redis_url, "--store", f"sqlite:///{small_disk}/flow.db", "--prefix",
            unique_prefix, "--port", str(port), "--ttl", "0", "--log-level", "warning"]  # fmt: skip
    log = tmp_path / "server.log"
    try:
        with cli_process(*args, log=log) as server:
            wait_for(lambda: client.get("/api/health").status_code == 200, 30, "the server to start")
            before = _publish_tasks(redis_url, unique_prefix, 200)
            wait_for(lambda: _count_done(client) == len(before), 30, "the first tasks to be stored")

            filler = _fill(small_disk)
            # More than the space any preallocated WAL/journal page could absorb.
            during = _publish_tasks(redis_url, unique_prefix, 1500, payload=500)
            health = wait_for(lambda: (h := _health(client))["status"] == "degraded" and h, 60,
                              "health to report the full disk")  # fmt: skip
            detail = f"{health['consumer'].get('detail')}"
            assert health["consumer"]["status"] == "store_error", health
            assert "full" in detail, detail  # names the problem...
            assert "flow.db" in detail, detail  # ...the file...
            assert "free space" in detail, detail  # ...and the fix
            # Still serving what it has: the UI keeps working on the stored data.
            assert client.get("/api/tasks", params={"limit": 5}).status_code == 200
            assert client.get(f"/api/tasks/{before[0]}").json()["state"] == "SUCCESS"
            assert _count_done(client) < len(before) + len(during)
            assert server.poll() is None

            filler.unlink()  # the operator frees space
            try:
                wait_for(lambda: _count_done(client) == len(before) + len(during), 60,
                         "every task published during the outage to be stored")  # fmt: skip
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}: health {_health(client)}; log:\n{log.read_text()[-3000:]}"
                ) from None
            wait_for(lambda: _health(client)["status"] == "ok", 30, "health to be ok again")
            assert server.poll() is None
        assert "Traceback" not in log.read_text()
    finally:
        client.close()
        redis_client.delete(f"{unique_prefix}:events")


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[tuple[str, str, str]]:
    """(store url, admin url, database name): a database of its own, since the test makes it read-only."""
    server, _, _ = pg_url.rpartition("/")
    name = f"cf_ro_{uuid.uuid4().hex[:8]}"
    with own_database(server, name) as url:
        yield url, f"{server}/postgres", name


def _failover(admin: str, name: str, read_only: bool) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        setting = "on" if read_only else "off"
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {setting}')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def test_read_only_postgresql_store_reports_keeps_serving_and_recovers(
    redis_url: str, unique_prefix: str, pg_store_url: tuple[str, str, str], tmp_path: Path, redis_client: Any
) -> None:
    store_url, admin, name = pg_store_url
    port = free_port()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    args = ["server", "--broker-url", redis_url, "--store", store_url, "--prefix", unique_prefix,
            "--port", str(port), "--ttl", "0", "--log-level", "warning"]  # fmt: skip
    log = tmp_path / "server.log"
    try:
        with cli_process(*args, log=log) as server:
            wait_for(lambda: client.get("/api/health").status_code == 200, 30, "the server to start")
            before = _publish_tasks(redis_url, unique_prefix, 100)
            wait_for(lambda: _count_done(client) == len(before), 30, "the first tasks to be stored")

            _failover(admin, name, read_only=True)
            during = _publish_tasks(redis_url, unique_prefix, 300)
            health = wait_for(lambda: (h := _health(client))["status"] == "degraded" and h, 60,
                              "health to report the read-only store")  # fmt: skip
            assert health["consumer"]["status"] == "store_error", health
            detail = f"{health['consumer'].get('detail')}"
            assert "read-only" in detail, health
            assert "at a writable primary" in detail, health  # the fix, not "check the URL"
            # Reads still work on a read-only database (the first request may meet a terminated session).
            wait_for(lambda: client.get("/api/tasks", params={"limit": 5}).status_code == 200, 30, "reads")
            assert _count_done(client) == len(before)
            assert server.poll() is None

            _failover(admin, name, read_only=False)
            wait_for(lambda: _count_done(client) == len(before) + len(during), 90,
                     "every task published while read-only to be stored")  # fmt: skip
            wait_for(lambda: _health(client)["status"] == "ok", 30, "health to be ok again")
            assert server.poll() is None
    finally:
        client.close()
        redis_client.delete(f"{unique_prefix}:events")
