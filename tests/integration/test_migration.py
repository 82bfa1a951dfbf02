"""Upgrades keep history: a store each release wrote, built by running that release's code, opens in
the current version with every task, event and graph it had; two processes migrate it once; a release
refuses a newer store without touching it; `celery-flow migrate` says and does what it takes."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.events import event
from tests.support.releases import build_release_stores, release_command, release_env, release_source
from tests.support.server_helpers import CLI, REPO, cli_env, cli_process, free_port, stop_process
from tests.support.wait import wait_for

from celery_flow.events import Event, encode
from celery_flow.store import open_store
from celery_flow.store.migrations import PG_LOCK_KEY, applied
from celery_flow.store.schema import SCHEMA_VERSION
from celery_flow.store.sql import SqlStore
from celery_flow.transport import from_url


@dataclass(frozen=True)
class Release:
    schema: int
    commit: str
    note: str


# Every released store schema and the commit of a release that wrote it: a release that changes the
# schema adds its row here, and every test below then opens a store that release built.
RELEASES = [
    Release(2, "77b421b", "first schema with a version guard: numbered tasks and flows"),
]
# Fields the current API answers carry that no release in RELEASES answered: left out of comparisons
# (queue_wait on tasks; summary on a flow's and a trace's answer).
# Schema versions this code adds to a release-built schema 2 store; a version no code writes yet.
NEW_VERSIONS = list(range(3, SCHEMA_VERSION + 1))
FUTURE = SCHEMA_VERSION + 1
# "collapsed" and an edge's "count": flows of any size (store/members.py).
NEW_FIELDS = frozenset(
    {"queue_wait", "summary", "reason", "fingerprint", "stuck", "cluster_size", "collapsed", "count"}
)
TABLES = (
    "meta", "events", "tasks", "flows", "name_stats", "registry", "workers", "counters", "migrations",
    "failure_clusters", "failure_counts",
)  # fmt: skip


@dataclass
class ReleaseStores:
    release: Release
    src: Path
    sqlite_file: Path
    pg_template: str
    answers: dict[str, dict[str, Any]]  # by engine: API path -> the release's answer


@dataclass
class OldStore:
    release: Release
    src: Path
    engine: str
    url: str
    answers: dict[str, Any]
    file: Path | None = None


def _admin(pg_url: str) -> str:
    return pg_url.rpartition("/")[0] + "/postgres"


@pytest.fixture(scope="session", params=RELEASES, ids=lambda r: f"schema{r.schema}")
def release_stores(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str, pg_url: str
) -> Iterator[ReleaseStores]:
    """One SQLite file and one PostgreSQL template database per release, filled by that release's code."""
    import psycopg

    release: Release = request.param
    work = tmp_path_factory.mktemp(f"release-{release.commit}")
    src = release_source(release.commit, work / "source")
    template = f"cf_release{release.schema}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin(pg_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{template}"')
    try:
        sqlite_url = f"sqlite:///{work}/release.db"
        pg_store = pg_url.rpartition("/")[0] + f"/{template}"
        answers = build_release_stores(
            src, redis_url, f"rel_{uuid.uuid4().hex[:8]}", [sqlite_url, pg_store], work
        )
        yield ReleaseStores(
            release,
            src,
            work / "release.db",
            template,
            {"sqlite": answers[sqlite_url], "postgresql": answers[pg_store]},
        )
    finally:
        with psycopg.connect(_admin(pg_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(
    request: pytest.FixtureRequest, release_stores: ReleaseStores, tmp_path: Path, pg_url: str
) -> Iterator[OldStore]:
    """A copy, for one test, of the store a release wrote."""
    engine = request.param
    answers = release_stores.answers[engine]
    if engine == "sqlite":
        copy = tmp_path / "flow.db"
        shutil.copyfile(release_stores.sqlite_file, copy)
        yield OldStore(release_stores.release, release_stores.src, engine, f"sqlite:///{copy}", answers, copy)
        return
    import psycopg

    name = f"cf_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin(pg_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{release_stores.pg_template}"')
    try:
        yield OldStore(
            release_stores.release,
            release_stores.src,
            engine,
            pg_url.rpartition("/")[0] + f"/{name}",
            answers,
        )
    finally:
        with psycopg.connect(_admin(pg_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without(v, keys) for v in value]
    return value


def snapshot(store: OldStore) -> str:
    """A digest of everything in the store: the SQLite file's bytes, or every PostgreSQL row and index."""
    if store.file is not None:
        assert not Path(f"{store.file}-wal").exists() or Path(f"{store.file}-wal").stat().st_size == 0
        return hashlib.sha256(store.file.read_bytes()).hexdigest()
    import psycopg

    digest = hashlib.sha256()
    with psycopg.connect(store.url) as conn:
        for table in TABLES:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            rows = conn.execute(f"SELECT t::text FROM {table} t ORDER BY 1").fetchall()
            digest.update(repr((table, rows)).encode())
        digest.update(
            repr(
                conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
                ).fetchall()
            ).encode()
        )
        digest.update(
            repr(
                conn.execute(
                    "SELECT table_name, column_name, data_type FROM information_schema"
                    ".columns WHERE table_schema = 'public' ORDER BY 1, 2"
                ).fetchall()
            ).encode()
        )
    return digest.hexdigest()


def migrate_now(url: str) -> None:
    """Open the store with the current code and wait for its re-fold to finish."""
    store = open_store(url)
    assert isinstance(store, SqlStore)
    try:
        wait_for(lambda: all(row[5] is not None for row in applied(store) if row[0] > 2), 60, "the re-fold")
    finally:
        store.close()


def record(url: str) -> list[tuple[int, str, float, str, str, float | None]]:
    store = open_store(url, migrate="plan")
    assert isinstance(store, SqlStore)
    try:
        return applied(store)
    finally:
        store.close()


# ---- the current server on a store each release wrote --------------------------------------------


def test_current_server_serves_a_released_store_as_that_release_did(
    old_store: OldStore, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    args = ("server", "--no-consumer", "--store", old_store.url, "--port", str(port), "--log-level", "info")
    with cli_process(*args, log=log), httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

        def migrated() -> dict[str, Any] | None:
            store = client.get("/api/health").json()["store"]
            return store if store["schema"] == SCHEMA_VERSION and store["refold"] is None else None

        health = wait_for(migrated, 60, "the server to migrate and re-fold the store")
        tasks = old_store.answers["/api/tasks?limit=500"]["items"]
        events = sum(len(old_store.answers[f"/api/tasks/{t['task_id']}"]["events"]) for t in tasks)
        assert (health["tasks"], health["events"]) == (len(tasks), events)
        for path, answer in old_store.answers.items():
            assert without(client.get(path).json(), NEW_FIELDS) == without(answer, NEW_FIELDS), path

        # What schema 3 adds: how long each task waited for a worker, ETA delays left out.
        for summary in client.get("/api/tasks?limit=500").json()["items"]:
            task = client.get(f"/api/tasks/{summary['task_id']}").json()
            assert summary["queue_wait"] == task["queue_wait"]
            if task["eta"] is not None and task["retries"] == 0:  # add(5, 5), sent with a 1.5 s countdown
                assert task["started_at"] - task["sent_at"] > 1.4
                assert task["queue_wait"] == pytest.approx(task["started_at"] - task["eta"], abs=1e-6)
            else:
                assert task["queue_wait"] == pytest.approx(task["started_at"] - task["sent_at"], abs=1e-6)

        # What schema 4 adds: the re-fold counted the release's failures and retries by cause.
        details = [client.get(f"/api/tasks/{t['task_id']}").json() for t in tasks]
        failed = [t for t in details if t["state"] == "FAILURE"]
        retried = [e for t in details for e in t["events"] if e["type"] == "retried"]
        assert failed
        assert retried
        clusters = client.get("/api/failures").json()["items"]
        assert sum(c["count"] for c in clusters) == len(failed)
        assert sum(c["retries"] for c in clusters) == len(retried)
        for task in failed:
            assert task["fingerprint"] in {c["fingerprint"] for c in clusters}
            assert task["cluster_size"] >= 1
        # ... and the overview's counts: tasks finished by state, runtimes (store/stats.py).
        overview = client.get("/api/stats/overview", params={"since": 0}).json()
        finals = [t for t in details if t["state"] in overview["throughput"]]
        assert overview["finished"] == len(finals)
        assert sum(overview["throughput"]["FAILURE"]) == len(failed)
        heat = client.get("/api/stats/heatmap", params={"since": 0}).json()
        assert sum(map(sum, heat["counts"])) == len([t for t in details if t["runtime"] is not None])
    text = log.read_text()
    assert "from store schema 2 to 3" in text
    assert f"re-fold for store schema {SCHEMA_VERSION} finished" in text
    assert [(row[0], row[4]) for row in record(old_store.url)] == [(v, "0.1.0") for v in NEW_VERSIONS]


def test_a_migrated_store_has_exactly_the_schema_of_a_new_one(old_store: OldStore, tmp_path: Path) -> None:
    migrate_now(old_store.url)
    if old_store.engine == "sqlite":
        fresh_url = f"sqlite:///{tmp_path}/fresh.db"
    else:
        fresh_url = old_store.url.rpartition("/")[0] + f"/cf_fresh_{uuid.uuid4().hex[:8]}"
        import psycopg

        with psycopg.connect(_admin(old_store.url), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{fresh_url.rpartition("/")[2]}"')
    try:
        open_store(fresh_url).close()
        assert schema_of(old_store.url) == schema_of(fresh_url)
    finally:
        if old_store.engine == "postgresql":
            import psycopg

            with psycopg.connect(_admin(old_store.url), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{fresh_url.rpartition("/")[2]}" WITH (FORCE)')


def schema_of(url: str) -> list[Any]:
    """Tables with their columns (name, type, nullability, default) and indexes with their columns."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite://"))
        try:
            out: list[Any] = []
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
                out.append((table, conn.execute(f"PRAGMA table_info({table})").fetchall()))
                for index in sorted(r[1] for r in conn.execute(f"PRAGMA index_list({table})")):
                    out.append((table, index, conn.execute(f"PRAGMA index_xinfo({index})").fetchall()))
            return out
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        columns = pg.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default, collation_name "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, ordinal_position"
        ).fetchall()
        indexes = pg.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        return [columns, indexes]


# ---- two processes starting together -------------------------------------------------------------


def hold_migration_lock(store: OldStore) -> Callable[[], None]:
    """Take the store's migration lock as a migrating process holds it; return what releases it."""
    if store.file is not None:
        conn = sqlite3.connect(store.file, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")

        return conn.close  # rolls back, releasing the lock; closing twice is harmless
    import psycopg

    pg = psycopg.connect(store.url, autocommit=True)
    pg.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK_KEY,))
    return pg.close


def new_task_event(task_id: str) -> Event:
    return event("sent", task_id, name="r.after")


def test_two_consumers_starting_together_migrate_the_store_once(
    old_store: OldStore, tmp_path: Path, redis_url: str, unique_prefix: str
) -> None:
    """Both find schema 2 and queue on the migration lock; one migrates, the other waits, finds schema 3
    and goes on: the store's record holds one step, and both fold what arrives next."""
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    args = [
        "consume",
        "--broker-url",
        redis_url,
        "--store",
        old_store.url,
        "--prefix",
        unique_prefix,
        "--log-level",
        "info",
    ]
    release = hold_migration_lock(old_store)
    outs = [open(log, "wb") for log in logs]  # noqa: SIM115 - closed below
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = [
            subprocess.Popen(
                [*CLI, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=cli_env(),
                cwd=REPO,
                start_new_session=True,
            )
            for out in outs
        ]
        wait_for(
            lambda: all("waiting (up to" in log.read_text() for log in logs),
            60,
            "both consumers to wait for the migration lock",
        )
        release()
        wait_for(
            lambda: all("celery-flow consume: broker=" in log.read_text() for log in logs),
            60,
            "both consumers to open the store",
        )
        assert all(proc.poll() is None for proc in procs)
        transport = from_url(redis_url, prefix=unique_prefix)
        try:
            transport.publish([encode(new_task_event(f"after-{i}")) for i in range(20)])
        finally:
            transport.close()

        def folded() -> bool:
            store = open_store(old_store.url, migrate="plan")
            try:
                return store.stats().tasks == len(old_store.answers["/api/tasks?limit=500"]["items"]) + 20
            finally:
                store.close()

        wait_for(folded, 60, "the consumers to fold new events")
        wait_for(lambda: record(old_store.url)[0][5] is not None, 60, "the re-fold to finish")
    finally:
        release()
        for proc in procs:
            stop_process(proc)
        for out in outs:
            out.close()
    texts = [log.read_text() for log in logs]
    migrator = [i for i, text in enumerate(texts) if "from store schema 2 to 3" in text]
    assert len(migrator) == 1, texts
    other = 1 - migrator[0]
    assert f"was migrated to store schema {SCHEMA_VERSION} by another process meanwhile" in texts[other], (
        texts[other]
    )
    assert "from store schema 2 to 3" not in texts[other]
    steps = record(old_store.url)
    assert [row[0] for row in steps] == NEW_VERSIONS
    assert steps[0][3].endswith(f":{procs[migrator[0]].pid}")


# ---- a release on a newer store ------------------------------------------------------------------


def test_a_release_refuses_a_newer_store_in_one_line_and_leaves_it_untouched(
    old_store: OldStore, tmp_path: Path, redis_url: str, unique_prefix: str
) -> None:
    migrate_now(old_store.url)
    before = snapshot(old_store)
    env = release_env(old_store.src)
    port = str(free_port())
    for args in (
        ("consume", "--broker-url", redis_url, "--store", old_store.url, "--prefix", unique_prefix),
        ("server", "--no-consumer", "--store", old_store.url, "--port", port),
    ):
        proc = subprocess.run(
            release_command(old_store.src, *args),
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2, lines
        assert len(lines) == 1, lines
        assert lines[0].startswith("Error: cannot open the store"), lines
        assert (
            f"holds celery-flow store schema {SCHEMA_VERSION}, this version needs {old_store.release.schema}"
            in (lines[0])
        )
    assert snapshot(old_store) == before


def test_a_store_newer_than_this_code_is_refused_before_anything_is_written(
    old_store: OldStore, redis_url: str, unique_prefix: str
) -> None:
    """The next release's store as this one sees it: a schema beyond ours, migrated by celery-flow 9.1."""
    migrate_now(old_store.url)
    if old_store.file is not None:
        conn = sqlite3.connect(old_store.file)
        with conn:
            conn.execute(f"UPDATE meta SET value = {FUTURE} WHERE key = 'schema'")
            conn.execute(f"INSERT INTO migrations VALUES ({FUTURE}, 'the future', 0, 'h:1', '9.1.0', NULL)")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(old_store.url, autocommit=True) as pg:
            pg.execute(f"UPDATE meta SET value = {FUTURE} WHERE key = 'schema'")
            pg.execute(f"INSERT INTO migrations VALUES ({FUTURE}, 'the future', 0, 'h:1', '9.1.0', NULL)")
    before = snapshot(old_store)
    proc = subprocess.run(
        [*CLI, "consume", "--broker-url", redis_url, "--store", old_store.url, "--prefix", unique_prefix],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, lines
    assert len(lines) == 1, lines
    assert (
        f"holds celery-flow store schema {FUTURE}, newer than this celery-flow (0.1.0) reads "
        f"(schema {SCHEMA_VERSION})" in lines[0]
    )
    assert "run celery-flow 9.1.0 or later" in lines[0]
    assert snapshot(old_store) == before


# ---- celery-flow migrate -------------------------------------------------------------------------


def test_migrate_dry_run_says_what_it_would_do_then_migrate_does_it(old_store: OldStore) -> None:
    tasks = len(old_store.answers["/api/tasks?limit=500"]["items"])
    before = snapshot(old_store)
    dry = subprocess.run(
        [*CLI, "migrate", "--store", old_store.url, "--dry-run"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout
    assert f"is at store schema 2; this celery-flow (0.1.0) writes schema {SCHEMA_VERSION}" in out
    assert "step 3: tasks.queue_wait" in out
    assert f"rebuilds one index over {tasks} tasks" in out
    assert f"re-fold: every task from its stored events ({tasks} tasks," in out
    assert out.strip().endswith("dry run: nothing was written")
    assert snapshot(old_store) == before

    done = subprocess.run(
        [*CLI, "migrate", "--store", old_store.url],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"applied steps {', '.join(map(str, NEW_VERSIONS))}: the schema is up to date" in done.stdout
    assert f"re-fold for store schema {SCHEMA_VERSION} finished: {tasks} tasks" in done.stdout
    assert done.stdout.strip().endswith("done")
    steps = record(old_store.url)
    assert [row[0] for row in steps] == NEW_VERSIONS
    assert steps[0][5] is not None

    again = subprocess.run(
        [*CLI, "migrate", "--store", old_store.url], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().endswith(f"is at store schema {SCHEMA_VERSION}: nothing to do")


def test_migrate_names_a_missing_store_instead_of_creating_one(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    proc = subprocess.run(
        [*CLI, "migrate", "--store", f"sqlite:///{path}"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == f"Error: no store at sqlite:///{path}: nothing to migrate (check --store / "
        "CELERY_FLOW_STORE)"
    )
    assert not path.exists()


def test_a_release_commit_missing_from_the_clone_fails_saying_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"git fetch --unshallow"):
        release_source("0123456789abcdef0123456789abcdef01234567", tmp_path)
