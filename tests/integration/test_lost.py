"""Lost and stuck tasks with real workers: a `celery worker` subprocess killed with SIGKILL or shut down
mid-task, an `acks_late` task redelivered to a second worker, and a task running far past its name's
history, read over HTTP from a real server (embedded consumer) on both stores and both transports.

Workers announce a 1 s heartbeat interval (CELERY_FLOW_HEARTBEAT_INTERVAL), so a silent worker's tasks
are LOST 3 s after its last heartbeat; the tests wait with deadlines and check the verdict itself says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from tests.support.canvas_app import make_app
from tests.support.server_helpers import REPO, cli_env, cli_process, free_port, serving, start_cli
from tests.support.wait import wait_for

import celery_flow
from celery_flow.server import create_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEARTBEAT = "1"


@dataclass
class Env:
    api: httpx.Client
    producer: Celery
    keys: redis.Redis
    worker_env: dict[str, str]
    logs: Path

    def hold(self, key: str) -> str:
        """Start a `t.hold` that runs until `key` is set; its task id."""
        return str(self.producer.tasks["t.hold"].delay(key, timeout=60).id)

    def task(self, task_id: str) -> dict[str, Any] | None:
        resp = self.api.get(f"/api/tasks/{task_id}")
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def wait_state(self, task_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            task = self.task(task_id)
            return task if task is not None and task["state"] in states else None

        return wait_for(reached, timeout, f"task {task_id} in {states}")

    @contextmanager
    def worker(self, nodename: str, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
        """A prefork `celery worker -c 1` in its own process group; stopped (TERM, then KILL) on exit."""
        proc = start_cli(
            "-m", "celery", "-A", "tests.support.canvas_app", "worker", "--pool", "prefork", "-c", "1",
            "-n", nodename, "--without-mingle", "--without-gossip", "--loglevel", "WARNING",
            program=sys.executable, env={**self.worker_env, **extra}, log=self.logs / f"{nodename}.log",
        )  # fmt: skip
        try:
            wait_for(lambda: self.online(nodename), 60, f"worker {nodename} online")
            yield proc
        finally:
            kill(proc, signal.SIGTERM)

    def online(self, nodename: str) -> bool:
        return any(
            w["hostname"] == nodename and w["status"] == "online" for w in self.api.get("/api/workers").json()
        )


def kill(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send `sig` to the worker and its pool children; wait for it to end."""
    if proc.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# (store, transport): the transport is both Celery's broker and celery-flow's, so a redelivery is
# RabbitMQ's or Redis's own.
@pytest.fixture(scope="module", params=["sqlite-redis", "postgresql-redis", "sqlite-amqp"])
def env(
    request: pytest.FixtureRequest, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    store, transport = request.param.split("-")
    tmp = Path(tmp_path_factory.mktemp("lost"))
    store_url = (
        f"sqlite:///{tmp / 'flow.db'}" if store == "sqlite" else str(request.getfixturevalue("pg_url"))
    )
    broker = redis_url if transport == "redis" else str(request.getfixturevalue("amqp_url"))
    prefix = f"cft_{uuid.uuid4().hex[:8]}"
    queue = f"q_{prefix}"
    server = create_app(broker_url=broker, store=store_url, prefix=prefix)
    producer = make_app(broker, redis_url, broker, prefix, queue=queue)
    worker_env = cli_env(
        PYTHONPATH=str(REPO), CFT_BROKER_URL=broker, CFT_BACKEND_URL=redis_url, CFT_FLOW_URL=broker,
        CFT_FLOW_PREFIX=prefix, CFT_QUEUE=queue, CELERY_FLOW_HEARTBEAT_INTERVAL=HEARTBEAT,
    )  # fmt: skip
    keys = redis.Redis.from_url(redis_url)
    try:
        with serving(server) as url, httpx.Client(base_url=url, timeout=10) as api:
            yield Env(api, producer, keys, worker_env, tmp)
    finally:
        celery_flow.shutdown(producer)
        keys.close()


def test_a_worker_killed_mid_task_leaves_it_lost_within_three_heartbeats(env: Env) -> None:
    node = f"kill9-{uuid.uuid4().hex[:6]}@lost"
    key = f"hold-{uuid.uuid4().hex}"
    with env.worker(node) as proc:
        task_id = env.hold(key)
        env.wait_state(task_id, "STARTED")
        kill(proc, signal.SIGKILL)
    try:
        task = env.wait_state(task_id, "LOST")
    finally:
        env.keys.set(key, 1)
    assert task["hostname"] == node
    assert task["reason"].startswith(f"no heartbeat from worker {node} since ")
    assert task["reason"].endswith(f": 3 x its {HEARTBEAT} s interval passed")
    assert not task["stuck"]
    graph = env.api.get(f"/api/flows/{task_id}").json()
    assert (graph["summary"]["state"], graph["summary"]["counts"]) == ("LOST", {"LOST": 1})
    assert [(n["state"], n["reason"]) for n in graph["nodes"]] == [("LOST", task["reason"])]
    listed = env.api.get("/api/tasks", params={"state": "LOST", "worker": node}).json()["items"]
    assert [(t["task_id"], t["reason"]) for t in listed] == [(task_id, task["reason"])]
    assert next(w for w in env.api.get("/api/workers").json() if w["hostname"] == node)["status"] == "offline"


def test_a_graceful_shutdown_leaves_a_received_task_lost(env: Env) -> None:
    node = f"warm-{uuid.uuid4().hex[:6]}@lost"
    running, waiting = f"hold-{uuid.uuid4().hex}", f"hold-{uuid.uuid4().hex}"
    try:
        with env.worker(node) as proc:
            first = env.hold(running)
            env.wait_state(first, "STARTED")
            second = env.hold(waiting)  # prefetched behind the first: received, never started
            env.wait_state(second, "RECEIVED")
            proc.send_signal(signal.SIGTERM)  # a warm shutdown: the running task finishes first
            env.keys.set(running, 1)
            proc.wait(30)
        assert env.wait_state(first, "SUCCESS")["reason"] is None
        task = env.wait_state(second, "LOST")
    finally:
        env.keys.set(waiting, 1)
    assert task["hostname"] == node
    assert task["reason"].startswith(f"worker {node} went offline at ")
    graph = env.api.get(f"/api/flows/{second}").json()
    assert (graph["summary"]["state"], graph["summary"]["counts"]) == ("LOST", {"LOST": 1})


def test_an_acks_late_task_of_a_killed_worker_is_redelivered_and_succeeds(env: Env) -> None:
    first, second = (f"{n}-{uuid.uuid4().hex[:6]}@lost" for n in ("late1", "late2"))
    key = f"hold-{uuid.uuid4().hex}"
    with env.worker(first, CFT_ACKS_LATE="5") as proc:
        task_id = env.hold(key)
        env.wait_state(task_id, "STARTED")
        kill(proc, signal.SIGKILL)
    env.keys.set(key, 1)  # the next run returns at once
    with env.worker(second, CFT_ACKS_LATE="5"):
        task = env.wait_state(task_id, "SUCCESS", timeout=90)
    assert (task["hostname"], task["reason"]) == (second, None)
    graph = env.api.get(f"/api/flows/{task_id}").json()
    assert (graph["summary"]["state"], graph["summary"]["counts"]) == ("SUCCESS", {"SUCCESS": 1})
    hosts = {e["hostname"] for e in task["events"] if e["type"] == "started"}
    assert hosts == {first, second}


def test_a_task_running_far_past_its_names_history_is_stuck(env: Env) -> None:
    node = f"stuck-{uuid.uuid4().hex[:6]}@lost"
    slow = env.producer.tasks["t.slow"]

    def stuck_ids() -> list[str]:
        return [t["task_id"] for t in env.api.get("/api/tasks", params={"stuck": "true"}).json()["items"]]

    with env.worker(node):
        for result in [slow.delay(0) for _ in range(20)]:
            result.get(timeout=60)
        wait_for(
            lambda: (
                len(env.api.get("/api/tasks", params={"name": "t.slow", "state": "SUCCESS"}).json()["items"])
                == 20
            ),
            30,
            "20 runs of t.slow stored",
        )
        task_id = str(slow.delay(8).id)
        # 5 x the p99 of 20 runs of a few ms is under the 1 s floor: stuck a second after it started.
        wait_for(lambda: stuck_ids() == [task_id], 30, "the long run listed as stuck")
        listed = env.api.get("/api/tasks", params={"name": "t.slow"}).json()["items"]
        assert {t["task_id"] for t in listed if t["stuck"]} == {task_id}
        detail = env.task(task_id)
        assert detail is not None
        assert (detail["state"], detail["stuck"]) == ("STARTED", True)
        assert [n["stuck"] for n in env.api.get(f"/api/flows/{task_id}").json()["nodes"]] == [True]
        task = env.wait_state(task_id, "SUCCESS")
    assert task["stuck"] is False
    assert task_id not in stuck_ids()


def test_stuck_after_from_the_command_line_flags_a_task_past_it(
    redis_url: str, tmp_path: Path, unique_prefix: str
) -> None:
    """`celery-flow server --stuck-after 1s`: a task of a name with no history is stuck after 1 s."""
    port = free_port()
    key = f"hold-{uuid.uuid4().hex}"
    args = ("server", "--broker-url", redis_url, "--store", f"sqlite:///{tmp_path / 'flow.db'}",
            "--prefix", unique_prefix, "--port", str(port), "--stuck-after", "1s")  # fmt: skip
    app = make_app(redis_url, redis_url, redis_url, unique_prefix, queue=f"q_{unique_prefix}")
    keys = redis.Redis.from_url(redis_url)
    try:
        with (
            cli_process(*args, log=tmp_path / "server.log"),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as api,
            start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="ERROR"),
        ):
            wait_for(lambda: api.get("/api/health").status_code == 200, 30, "the server up")
            task_id = str(app.tasks["t.hold"].delay(key, timeout=60).id)
            try:
                found = wait_for(
                    lambda: api.get("/api/tasks", params={"stuck": "true"}).json()["items"] or None,
                    30,
                    "the held task listed as stuck",
                )
                assert [t["task_id"] for t in found] == [task_id]
                assert api.get(f"/api/tasks/{task_id}").json()["stuck"] is True
            finally:
                keys.set(key, 1)
            wait_for(
                lambda: api.get(f"/api/tasks/{task_id}").json()["state"] == "SUCCESS", 30, "the task done"
            )
            assert api.get(f"/api/tasks/{task_id}").json()["stuck"] is False
    finally:
        celery_flow.shutdown(app)
        keys.close()
