"""Session fixtures giving each test run its own slice of the real services (DESIGN.md §6).

- Redis: a whole logical database, claimed with a lock key in DB 0 so concurrent runs never share one,
  flushed before and after.
- PostgreSQL: a database created for the run and dropped afterwards.
- RabbitMQ: a vhost created for the run and deleted afterwards.
- SQS: a moto server of the run's own on a free port (tests/support/moto_server.py), killed afterwards.

Each fixture checks the service first and fails with a message naming the command that starts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.support.bigflow import big_flow  # noqa: F401  (a session fixture: one 100,000-task chord)
from tests.support.moto_server import MotoServer
from tests.support.postgres import own_database

REDIS_HOST = os.environ.get("CELERY_FLOW_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CELERY_FLOW_TEST_REDIS_PORT", "6379"))
PG_DSN = os.environ.get("CELERY_FLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
AMQP_HOST = os.environ.get("CELERY_FLOW_TEST_AMQP_HOST", "127.0.0.1:5672")

RUN_ID = uuid.uuid4().hex[:10]

START_HINT = "start the services with `bash .ci/services.sh`"


@pytest.fixture(scope="session")
def redis_db() -> Iterator[int]:
    """A Redis logical database (1..15) owned by this test run."""
    admin = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0, socket_timeout=5)
    try:
        admin.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable ({exc}): {START_HINT}")
    for db in range(1, 16):
        if admin.set(f"celery_flow_test_lock:{db}", RUN_ID, nx=True, ex=3600):
            break
    else:
        pytest.fail(
            "every Redis database 1..15 is claimed by another test run: wait for it, or delete stale "
            "celery_flow_test_lock:* keys in Redis DB 0"
        )
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield db
    finally:
        client.flushdb()
        client.close()
        if admin.get(f"celery_flow_test_lock:{db}") == RUN_ID.encode():
            admin.delete(f"celery_flow_test_lock:{db}")
        admin.close()


@pytest.fixture(scope="session")
def redis_url(redis_db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def unique_prefix() -> str:
    """A key/exchange prefix unique to one test, so tests in one run never see each other's events."""
    return f"cft_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database created for this run and dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"celery_flow_test_{RUN_ID}"
    try:
        psycopg.connect(f"{PG_DSN}/postgres", connect_timeout=5).close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {PG_DSN} is not reachable ({exc}): {START_HINT}")
    with own_database(PG_DSN, name) as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost created for this run (guest may use it) and deleted afterwards."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        pytest.fail(f"rabbitmqctl not found: RabbitMQ is needed for these tests; {START_HINT}")
    vhost = f"celery_flow_test_{RUN_ID}"

    def run(*args: str) -> None:
        proc = subprocess.run([ctl, *args], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr.strip()}; {START_HINT}")

    run("add_vhost", vhost)
    run("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def sqs_url() -> Iterator[str]:
    """`sqs://key:secret@127.0.0.1:<port>` of a local SQS endpoint (moto) owned by this test run."""
    with MotoServer() as server:
        yield server.url


@pytest.fixture(params=["redis", "amqp"])
def transport_url(request: pytest.FixtureRequest) -> str:
    """celery-flow's own transport URL, once per broker kind (issue 5: every integration test runs on both).

    Celery itself keeps using Redis (its own DB) in these tests; this is the URL given to `init()` and to the
    consumer. Use it together with `unique_prefix` so each test has its own stream / exchange and queue.
    """
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("amqp_url"))
