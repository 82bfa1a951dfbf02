"""The consumer against real Redis: kill -9 and restart, malformed entries, a broker that goes away."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from tests.support.events import finished_task
from tests.support.server_helpers import TcpProxy, cli_env, cli_process, serving
from tests.support.wait import wait_for

from celery_flow.events import MAX_EVENT_BYTES, encode
from celery_flow.server import create_app
from celery_flow.store import open_store
from celery_flow.store.base import TaskFilter
from celery_flow.transport import from_url

pytestmark = pytest.mark.slow


def count_tasks(store_url: str, state: str) -> int:
    store = open_store(store_url)
    try:
        total, cursor = 0, None
        while True:
            page = store.list_tasks(TaskFilter(state=state), 500, cursor)
            total += len(page.items)
            if page.next_cursor is None:
                return total
            cursor = page.next_cursor
    finally:
        store.close()


def stored_events(store_url: str) -> int:
    store = open_store(store_url)
    try:
        return store.stats().events
    finally:
        store.close()


def backlog(url: str, prefix: str) -> int | None:
    """Entries of the shared group not yet acknowledged (Redis: undelivered + pending; AMQP: ready)."""
    transport = from_url(url, prefix=prefix)
    try:
        sub = transport.subscribe("celery_flow", "test-probe")
        try:
            return sub.lag()
        finally:
            sub.close()
    finally:
        transport.close()


def test_kill_9_mid_stream_then_restart_loses_nothing_and_doubles_nothing(
    transport_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'flow.db'}"
    n_tasks = 2500
    payloads = [encode(e) for _ in range(n_tasks) for e in finished_task(uuid.uuid4().hex)]
    transport = from_url(transport_url, prefix=unique_prefix)
    args = ("consume", "--broker-url", transport_url, "--store", store_url, "--prefix", unique_prefix,
            "--name", "worker-a", "--batch", "200")  # fmt: skip

    def publish() -> None:
        for i in range(0, len(payloads), 100):
            transport.publish(payloads[i : i + 100])
            time.sleep(0.02)

    publisher = threading.Thread(target=publish)
    log = tmp_path / "consume.log"
    try:
        with cli_process(*args, log=log) as first:
            wait_for(lambda: "consumer running" in log.read_text(), 30, "consume to start")
            publisher.start()
            wait_for(lambda: stored_events(store_url) > 0, 30, "the first commit")
            assert publisher.is_alive()  # mid-stream: events are still being fired
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            assert first.returncode == -signal.SIGKILL
        at_kill = stored_events(store_url)
        assert 0 < at_kill < len(payloads)
        with cli_process(*args, log=tmp_path / "consume2.log"):
            publisher.join(60)
            wait_for(lambda: count_tasks(store_url, "SUCCESS") == n_tasks, 60, "every task folded")
            wait_for(lambda: backlog(transport_url, unique_prefix) == 0, 20, "every entry acknowledged")
    finally:
        transport.close()
    # every event fired is reflected exactly once
    assert stored_events(store_url) == len(payloads)
    assert count_tasks(store_url, "SUCCESS") == n_tasks


def test_malformed_entries_never_stop_the_consumer_and_show_in_health(
    transport_url: str, unique_prefix: str, tmp_path: Path
) -> None:
    before, after = uuid.uuid4().hex, uuid.uuid4().hex
    app = create_app(
        broker_url=transport_url, store=f"sqlite:///{tmp_path / 'flow.db'}", prefix=unique_prefix
    )
    malformed = [
        b"{nope",
        b"",
        b"\xff\xfe\x80",
        b'{"v": 1, "type": "sent", "ts": 1.0}',
        b'{"v": 1, "id": "a", "type": "sent", "ts": "noon", "task_id": "t"}',
        b'{"v": 1, "id": "b", "type": "sent", "ts": 1.0}',  # a task event without task_id
        b'{"v": 7, "id": "c", "type": "sent", "ts": 1.0, "task_id": "t"}',
        b"x" * (MAX_EVENT_BYTES + 10),
    ]
    transport = from_url(transport_url, prefix=unique_prefix)
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=10) as api:
            # (the server's consumer has joined the group: on RabbitMQ its queue now exists)
            transport.publish([encode(finished_task(before)[0]), *malformed])
            transport.publish([encode(e) for e in finished_task(after)])
            wait_for(
                lambda: api.get(f"/api/tasks/{after}").json().get("state") == "SUCCESS", 20, "later task"
            )
            assert api.get(f"/api/tasks/{before}").status_code == 200
            health = wait_for(lambda: (h := api.get("/api/health").json())["rejected_total"] == 8 and h, 10)
            assert health["rejected"] == {
                "not_json": 2,
                "not_utf8": 1,
                "missing_field": 2,
                "invalid_field": 1,
                "unsupported_version": 1,
                "oversize": 1,
            }
            assert health["status"] == "ok"
            assert health["consumer"]["status"] == "running"
            metrics = api.get("/metrics").text
            assert 'celery_flow_events_rejected_total{kind="not_json"} 2.0' in metrics
            wait_for(lambda: backlog(transport_url, unique_prefix) == 0, 10, "every entry acknowledged")
    finally:
        transport.close()


def test_a_redis_entry_without_the_event_field_is_rejected(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path
) -> None:
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'flow.db'}", prefix=unique_prefix)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as api:
        redis_client.xadd(f"{unique_prefix}:events", {"other": b"no e field"})
        health = wait_for(lambda: (h := api.get("/api/health").json())["rejected_total"] == 1 and h, 10)
        assert health["rejected"] == {"not_json": 1}
        assert redis_client.xpending(f"{unique_prefix}:events", "celery_flow")["pending"] == 0


def test_broker_outage_degrades_health_then_recovers_without_losing_events(
    redis_db: int, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path
) -> None:
    proxy = TcpProxy(("127.0.0.1", 6379)).start()
    broker_url = f"redis://127.0.0.1:{proxy.port}/{redis_db}"
    stream = f"{unique_prefix}:events"
    app = create_app(broker_url=broker_url, store=f"sqlite:///{tmp_path / 'flow.db'}", prefix=unique_prefix)
    first, during = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        with serving(app) as url, httpx.Client(base_url=url, timeout=10) as api:
            for event in finished_task(first):
                redis_client.xadd(stream, {"e": encode(event)})
            stored = lambda: api.get(f"/api/tasks/{first}").json().get("state") == "SUCCESS"  # noqa: E731
            wait_for(stored, 20, "first task stored in full")

            proxy.stop()  # the broker goes away, as far as the server can tell
            degraded = wait_for(
                lambda: (h := api.get("/api/health").json())["status"] == "degraded" and h, 20
            )
            assert degraded["transport"]["reachable"] is False
            wait_for(lambda: api.get("/api/health").json()["consumer"]["status"] == "reconnecting", 20)
            # the server keeps answering from the store meanwhile
            assert api.get(f"/api/tasks/{first}").json()["state"] == "SUCCESS"
            for event in finished_task(during):  # events keep arriving at the real broker
                redis_client.xadd(stream, {"e": encode(event)})

            proxy.start()  # the broker is back
            wait_for(lambda: api.get(f"/api/tasks/{during}").json().get("state") == "SUCCESS", 30, "catch-up")
            healthy = wait_for(lambda: (h := api.get("/api/health").json())["status"] == "ok" and h, 20)
            assert healthy["consumer"]["metrics"]["reconnects_total"] >= 1
    finally:
        proxy.stop()


def test_consume_cli_stops_cleanly_on_sigterm(redis_url: str, unique_prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "consume.log"
    args = (
        "consume",
        "--broker-url",
        redis_url,
        "--store",
        f"sqlite:///{tmp_path / 'f.db'}",
        "--prefix",
        unique_prefix,
    )
    with cli_process(*args, env=cli_env(), log=log) as proc:
        wait_for(lambda: "consumer running" in log.read_text(), 30, "consume to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


def test_two_consume_processes_split_one_stream_into_one_store(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'flow.db'}"
    n_tasks = 1500
    payloads = [encode(e) for _ in range(n_tasks) for e in finished_task(uuid.uuid4().hex)]
    transport = from_url(redis_url, prefix=unique_prefix)
    common = (
        "consume",
        "--broker-url",
        redis_url,
        "--store",
        store_url,
        "--prefix",
        unique_prefix,
        "--batch",
        "100",
    )
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    try:
        with (
            cli_process(*common, "--name", "a", log=logs[0]),
            cli_process(*common, "--name", "b", log=logs[1]),
        ):
            for log in logs:
                wait_for(lambda log=log: "consumer running" in log.read_text(), 30, "both consumers")
            for i in range(0, len(payloads), 500):
                transport.publish(payloads[i : i + 500])
            wait_for(lambda: count_tasks(store_url, "SUCCESS") == n_tasks, 60, "every task folded")
            consumers = {
                c["name"]: c for c in redis_client.xinfo_consumers(f"{unique_prefix}:events", "celery_flow")
            }
            assert set(consumers) == {b"a", b"b"} or set(consumers) == {"a", "b"}
    finally:
        transport.close()
    assert stored_events(store_url) == len(payloads)
    # both shared the work (the summary each logs when stopped)
    folded = [int(re.search(r"consumer stopped: (\d+) events", log.read_text()).group(1)) for log in logs]  # type: ignore[union-attr]
    assert all(n > 0 for n in folded), folded
    assert sum(folded) == len(payloads)


def test_a_server_without_consumer_reports_a_backlog_nobody_folds(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path
) -> None:
    app = create_app(broker_url=redis_url, store=f"sqlite:///{tmp_path / 'f.db'}", prefix=unique_prefix,
                     embedded_consumer=False)  # fmt: skip
    app.state.celery_flow.health.stall_after = 1.0
    stream = f"{unique_prefix}:events"
    redis_client.xgroup_create(stream, "celery_flow", id="0", mkstream=True)  # as a consumer once did
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as api:
        assert api.get("/api/health").json()["status"] == "ok"
        for event in finished_task(uuid.uuid4().hex):
            redis_client.xadd(stream, {"e": encode(event)})
        health = wait_for(lambda: (h := api.get("/api/health").json())["status"] == "degraded" and h, 20)
        assert health["consumer"]["mode"] == "external"
        assert health["consumer"]["status"] == "stalled"
        assert health["consumer"]["lag"] == 4
        assert "celery-flow consume" in health["consumer"]["detail"]


def test_batch_and_single_entries_mix_and_a_bad_line_costs_only_itself(
    redis_url: str, redis_client: redis.Redis, unique_prefix: str, tmp_path: Path
) -> None:
    """Batch framing (transport/base.py): an entry of newline-delimited events is judged line by line.

    Written raw, the way an older publisher (one event per `e` entry) and a newer one (batches in `b`)
    share a stream: a malformed line is counted and its neighbours are folded, and a batch entry larger
    than one event may be (MAX_EVENT_BYTES) still folds, since the limit applies per event.
    """
    stream = f"{unique_prefix}:events"
    single, mixed = uuid.uuid4().hex, uuid.uuid4().hex
    big = [uuid.uuid4().hex for _ in range(2000)]
    big_lines = [encode(e) for t in big for e in finished_task(t)]
    assert len(b"\n".join(big_lines)) > MAX_EVENT_BYTES
    a, b, c, d = (encode(e) for e in finished_task(mixed))
    store_url = f"sqlite:///{tmp_path / 'flow.db'}"
    app = create_app(broker_url=redis_url, store=store_url, prefix=unique_prefix)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as api:
        for event in finished_task(single):
            redis_client.xadd(stream, {"e": encode(event)})
        redis_client.xadd(stream, {"b": b"\n".join([a, b, b"{nope", c, b"\xff\xfe", d])})
        redis_client.xadd(stream, {"b": b"\n".join(big_lines)})
        # The consumer may read and fold the big entry after the other two (it takes longest): wait for it.
        for task_id in (single, mixed, big[-1]):
            wait_for(
                lambda t=task_id: api.get(f"/api/tasks/{t}").json().get("state") == "SUCCESS", 60, task_id
            )
        health = wait_for(lambda: (h := api.get("/api/health").json())["rejected_total"] == 2 and h, 10)
        assert health["rejected"] == {"not_json": 1, "not_utf8": 1}
        assert api.get(f"/api/tasks/{big[0]}").json()["state"] == "SUCCESS"
        # Every valid line folded once: every task finished, with its 4 events.
        tasks = 2 + len(big)
        assert (count_tasks(store_url, "SUCCESS"), stored_events(store_url)) == (tasks, 4 * tasks)
        wait_for(lambda: redis_client.xpending(stream, "celery_flow")["pending"] == 0, 10, "all acked")
        assert health["rejected"].get("oversize") is None
