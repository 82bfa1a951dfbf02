"""AmqpTransport against the real RabbitMQ: the delivery guarantees the consumer relies on (DESIGN.md §3),
mirroring tests/integration/test_redis_transport.py. Each run has its own vhost (`amqp_url`), each test
its own exchange and queues (`unique_prefix`), deleted afterwards."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
from amqp.exceptions import NotFound
from tests.support.server_helpers import TcpProxy
from tests.support.transport import read_all
from tests.support.wait import wait_for
from tests.support.worker import prefork_worker

from celery_flow.transport import ConfigError, DeliveryUnknown, Message, Transport, TransportError, from_url
from celery_flow.transport.amqp import (
    AmqpTransport,
    exchange_name,
    parse_amqp_url,
    queue_arguments,
    queue_name,
)


def _publish_each(t: Transport, payloads: list[bytes]) -> None:
    """One publish per event, so each is a message of its own (a lone event's format)."""
    for payload in payloads:
        t.publish([payload])


class Admin:
    """A plain py-amqp connection to inspect and delete this test's queues and exchange."""

    def __init__(self, url: str, prefix: str) -> None:
        p = parse_amqp_url(url)
        self.vhost = p.vhost
        self.prefix = prefix
        self.conn = amqp.Connection(
            host=p.hostport, userid=p.userid, password=p.password, virtual_host=p.vhost, connect_timeout=5
        )
        self.conn.connect()

    def ready(self, queue: str) -> int | None:
        """Messages ready in `queue`, or None when it does not exist."""
        ch = self.conn.channel()
        try:
            _, count, _ = ch.queue_declare(queue, passive=True)
        except NotFound:
            return None
        ch.close()
        return int(count)

    def cleanup(self) -> None:
        ch = self.conn.channel()
        for group in ("celery_flow", "g1", "g2", "g"):
            ch.queue_delete(queue_name(self.prefix, group))
        ch.exchange_delete(exchange_name(self.prefix))
        self.conn.close()


@pytest.fixture
def admin(amqp_url: str, unique_prefix: str) -> Iterator[Admin]:
    a = Admin(amqp_url, unique_prefix)
    yield a
    a.cleanup()


def close_connections(vhost: str, connection_name: str) -> int:
    """Have RabbitMQ force-close every connection of `vhost` with that client-given name."""

    def ctl(*args: str) -> str:
        return subprocess.run(
            ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout

    # JSON shows client properties but prints pids in a form close_connection rejects; the table
    # form prints usable pids. Join the two on the connection's name ("ip:port -> ip:port"); the two
    # listings are separate snapshots, so a connection still being registered may be in one only:
    # list again until they agree.
    def listings() -> tuple[list[str], dict[str, str]]:
        names = [
            c["name"]
            for c in json.loads(
                ctl("list_connections", "name", "vhost", "client_properties", "--formatter", "json")
            )
            if c["vhost"] == vhost
            and {p[0]: p[2] for p in c["client_properties"]}.get("connection_name") == connection_name
        ]
        pids: dict[str, str] = {}
        for line in ctl("list_connections", "--no-table-headers", "pid", "name").splitlines():
            if "\t" in line:
                pid, name = line.split("\t", 1)
                pids[name] = pid
        return names, pids

    names, pids = wait_for(
        listings,
        20,
        f"both listings to agree on the connections named {connection_name!r}",
        until=lambda listed: all(name in listed[1] for name in listed[0]),
        interval=0.2,
        retry_on=(),
    )
    for name in names:
        ctl("close_connection", pids[name], "test: simulated connection loss")
    return len(names)


# ---- delivery ------------------------------------------------------------------------------------


def test_publish_read_ack_and_lag(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = from_url(amqp_url, prefix=unique_prefix)
    assert isinstance(t, AmqpTransport)
    # The publisher declares the default queue itself: events published before any server ran are kept.
    _publish_each(t, [b"one", b"two", b"three"])
    assert admin.ready(f"{unique_prefix}.events") == 3
    sub = t.subscribe("celery_flow", "c1")
    msgs = read_all(sub, 3)
    assert [m.data for m in msgs] == [b"one", b"two", b"three"]
    assert len({m.id for m in msgs}) == 3
    assert sub.lag() == 3  # delivered but not acknowledged yet
    sub.ack([m.id for m in msgs])
    assert sub.lag() == 0
    t.publish([b"four"])
    wait_for(lambda: sub.lag() == 1, 10, "lag 1", retry_on=())
    assert [m.data for m in read_all(sub, 1)] == [b"four"]
    # Nothing left: read returns empty after its timeout.
    assert sub.read(count=10, timeout=0.1) == []
    sub.close()
    t.close()


def test_read_returns_what_is_there_without_waiting_for_a_full_batch(
    amqp_url: str, unique_prefix: str, admin: Admin
) -> None:
    t = from_url(amqp_url, prefix=unique_prefix)
    sub = t.subscribe("celery_flow", "c")
    _publish_each(t, [b"a", b"b"])
    got = read_all(sub, 2, count=500)
    assert [m.data for m in got] == [b"a", b"b"]
    # More messages than `count` are split over reads, in order.
    _publish_each(t, [f"{i}".encode() for i in range(25)])
    first = read_all(sub, 10, count=10)
    assert [m.data for m in first] == [f"{i}".encode() for i in range(10)]
    rest = read_all(sub, 15, count=10)
    assert [m.data for m in rest] == [f"{i}".encode() for i in range(10, 25)]
    sub.ack([m.id for m in got + first + rest])
    assert sub.lag() == 0
    sub.close()


def test_restart_redelivers_unacked_without_replaying_acked(
    amqp_url: str, unique_prefix: str, admin: Admin
) -> None:
    t = from_url(amqp_url, prefix=unique_prefix)
    _publish_each(t, [f"m{i}".encode() for i in range(6)])
    first = t.subscribe("celery_flow", "worker-a")
    got = read_all(first, 6)
    assert len(got) == 6
    first.ack([m.id for m in got[:4]])  # "crash" before acknowledging m4, m5
    first.close()

    t.publish([b"m6"])
    again = t.subscribe("celery_flow", "worker-a")
    resumed = read_all(again, 3)
    assert sorted(m.data for m in resumed) == [b"m4", b"m5", b"m6"]
    again.ack([m.id for m in resumed])
    assert again.read(count=10, timeout=0.2) == []
    assert again.lag() == 0


CONSUMER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from celery_flow.transport import from_url
    sub = from_url(sys.argv[1], prefix=sys.argv[2]).subscribe("celery_flow", "doomed")
    got = []
    end = time.monotonic() + 20
    while len(got) < int(sys.argv[3]) and time.monotonic() < end:
        got += sub.read(100, 0.2)
    print(len(got), flush=True)
    time.sleep(60)  # holding them unacknowledged until SIGKILL
    """
)


def test_sigkilled_consumers_messages_go_to_another_member(
    amqp_url: str, unique_prefix: str, admin: Admin
) -> None:
    t = from_url(amqp_url, prefix=unique_prefix)
    t.publish([f"e{i}".encode() for i in range(50)])
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSUMER_SCRIPT, amqp_url, unique_prefix, "50"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "50"  # it holds all 50, unacknowledged
        survivor = t.subscribe("celery_flow", "survivor")
        assert survivor.read(count=100, timeout=0.3) == []  # nothing while the other member lives
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        got = read_all(survivor, 50)
        assert sorted(m.data for m in got) == sorted(f"e{i}".encode() for i in range(50))
        survivor.ack([m.id for m in got])
        assert survivor.lag() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_two_consumers_split_the_load(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = from_url(amqp_url, prefix=unique_prefix)
    a, b = t.subscribe("celery_flow", "a"), t.subscribe("celery_flow", "b")
    # Both members consuming (a first read starts basic.consume) before the events arrive.
    assert a.read(count=10, timeout=0.05) == []
    assert b.read(count=10, timeout=0.05) == []
    _publish_each(t, [f"{i}".encode() for i in range(40)])
    got_a: list[Message] = []
    got_b: list[Message] = []

    def all_40_read() -> bool:
        got_a.extend(a.read(count=10, timeout=0.1))
        got_b.extend(b.read(count=10, timeout=0.1))
        return len(got_a) + len(got_b) >= 40

    wait_for(all_40_read, 10, "the 40 messages read by a and b", interval=0, retry_on=())
    assert got_a
    assert got_b
    assert {m.data for m in got_a}.isdisjoint({m.data for m in got_b})
    assert {m.data for m in got_a} | {m.data for m in got_b} == {f"{i}".encode() for i in range(40)}
    a.ack([m.id for m in got_a])
    b.ack([m.id for m in got_b])
    assert a.lag() == 0


def test_two_groups_each_see_everything(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix)
    g1, g2 = t.subscribe("g1", "c"), t.subscribe("g2", "c")
    assert (g1.queue, g2.queue) == (f"{unique_prefix}.events.g1", f"{unique_prefix}.events.g2")
    t.publish([b"x", b"y"])
    assert [m.data for m in read_all(g1, 2)] == [b"x", b"y"]
    assert [m.data for m in read_all(g2, 2)] == [b"x", b"y"]


def test_acks_cover_out_of_order_and_partial_batches(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = from_url(amqp_url, prefix=unique_prefix)
    _publish_each(t, [f"{i}".encode() for i in range(10)])
    sub = t.subscribe("celery_flow", "c")
    msgs = read_all(sub, 10)
    sub.ack([msgs[i].id for i in (0, 1, 2, 5, 7)])  # a cumulative ack for 0-2, single acks for 5 and 7
    sub.ack([msgs[1].id])  # acking twice is harmless (it would close the channel if sent)
    assert sub.lag() == 5
    sub.close()
    again = t.subscribe("celery_flow", "c")
    assert sorted(m.data for m in read_all(again, 5)) == [b"3", b"4", b"6", b"8", b"9"]


# ---- retention -----------------------------------------------------------------------------------


def test_queue_is_capped_by_maxlen_dropping_the_oldest(
    amqp_url: str, unique_prefix: str, admin: Admin
) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix, maxlen=100)
    _publish_each(t, [f"{i}".encode() for i in range(300)])
    assert admin.ready(f"{unique_prefix}.events") == 100
    sub = t.subscribe("celery_flow", "c")
    kept = read_all(sub, 100, count=200)
    assert [m.data for m in kept] == [f"{i}".encode() for i in range(200, 300)]  # the newest survive


def test_queue_messages_expire_after_ttl(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix, ttl=0.5)
    _publish_each(t, [b"old"] * 10)
    assert admin.ready(f"{unique_prefix}.events") == 10
    wait_for(lambda: admin.ready(f"{unique_prefix}.events") == 0, 10, "messages to expire", retry_on=())


def test_retention_arguments_default_to_one_day_and_max_length() -> None:
    assert queue_arguments(100_000, None) == {
        "x-max-length": 100_000,
        "x-max-length-bytes": 100_000 * 1024,
        "x-overflow": "drop-head",
        "x-message-ttl": 86_400_000,
    }
    assert "x-message-ttl" not in queue_arguments(10, 0)


def test_mismatched_retention_keeps_consuming_and_says_how_to_fix_it(
    amqp_url: str, unique_prefix: str, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    AmqpTransport(amqp_url, prefix=unique_prefix, maxlen=100).subscribe("celery_flow", "a").close()
    other = AmqpTransport(amqp_url, prefix=unique_prefix, maxlen=200, ttl=60)
    # The publisher never fails over retention options: it uses the queue as declared.
    other.publish([b"still delivered"])
    assert admin.ready(f"{unique_prefix}.events") == 1
    with caplog.at_level(logging.WARNING, logger="celery_flow.transport.amqp"):
        sub = other.subscribe("celery_flow", "b")
    assert [m.data for m in read_all(sub, 1)] == [b"still delivered"]
    message = sub.retention_mismatch
    assert message is not None
    assert [r.getMessage() for r in caplog.records] == [message]
    assert "\n" not in message
    assert f"rabbitmqctl delete_queue {unique_prefix}.events -p {admin.vhost}" in message
    assert "guest:guest" not in message
    # The queue kept its bound: 100, not 200.
    sub.close()
    _publish_each(other, [b"x"] * 150)
    assert admin.ready(f"{unique_prefix}.events") == 100


# ---- connection loss, fork -----------------------------------------------------------------------


def test_consumer_reconnects_and_drops_stale_acks(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix, max_backoff=0.5)
    sub = t.subscribe("celery_flow", f"{unique_prefix}-victim")
    _publish_each(t, [b"a", b"b"])
    before = read_all(sub, 2)
    assert [m.data for m in before] == [b"a", b"b"]

    assert close_connections(admin.vhost, f"celery-flow consumer {unique_prefix}-victim") == 1
    after: list[Message] = []
    errors: list[TransportError] = []

    def both_redelivered() -> bool:
        try:
            after.extend(sub.read(count=10, timeout=0.2))
        except TransportError as exc:
            errors.append(exc)  # the loss is reported once, then the same subscription reconnects
        return len(after) >= 2

    wait_for(both_redelivered, 15, "a and b redelivered", interval=0, retry_on=())
    assert sorted(m.data for m in after) == [b"a", b"b"]  # redelivered, nothing lost
    assert errors
    assert {m.id for m in after}.isdisjoint({m.id for m in before})
    # Acks from the dead connection must not acknowledge whatever now has the same delivery tags.
    sub.ack([m.id for m in before])
    assert sub.lag() == 2
    sub.ack([m.id for m in after])
    assert sub.lag() == 0


def test_publisher_reconnects_after_connection_loss(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix)
    t.publish([b"before"])
    name = f"celery-flow publisher {os.uname().nodename}:{os.getpid()}"
    assert close_connections(admin.vhost, name) >= 1

    def publish_after() -> bool:
        # The first attempt notices the closed connection (TransportError): that batch is dropped.
        t.publish([b"after"])
        return True

    wait_for(publish_after, 10, "a publish to succeed", interval=0, retry_on=(TransportError,))
    wait_for(lambda: admin.ready(f"{unique_prefix}.events") == 2, 10, "both events queued", retry_on=())


def test_publisher_declares_a_deleted_queue_again(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    """docs/transports.md's fix for a retention change deletes the queue while workers keep publishing."""
    t = AmqpTransport(amqp_url, prefix=unique_prefix)
    t.publish([b"before"])
    admin.conn.channel().queue_delete(f"{unique_prefix}.events")
    with pytest.raises(TransportError, match="reached no queue"):
        t.publish([b"lost?"])  # comes back unroutable: the publisher keeps the batch and retries
    t.publish([b"retried"])
    assert admin.ready(f"{unique_prefix}.events") == 1
    sub = t.subscribe("celery_flow", "c")
    assert [m.data for m in read_all(sub, 1)] == [b"retried"]


def test_a_batch_refused_in_part_may_have_been_queued_one_refused_whole_was_not(
    amqp_url: str, unique_prefix: str, admin: Admin
) -> None:
    """A full queue with `x-overflow: reject-publish` nacks what it refuses: the rest of the batch was
    queued (the publisher must not count it as dropped); a batch refused whole was not."""
    queue = queue_name(unique_prefix)
    admin.conn.channel().queue_declare(
        queue, durable=True, auto_delete=False, arguments={"x-max-length": 2, "x-overflow": "reject-publish"}
    )
    t = AmqpTransport(amqp_url, prefix=unique_prefix)
    # A payload holding a newline travels as a message of its own: three messages, one too many.
    with pytest.raises(DeliveryUnknown, match="rejected 1 of 3"):
        t.publish([b"1\n", b"2\n", b"3\n"])
    assert admin.ready(queue) == 2
    with pytest.raises(TransportError, match="rejected 2 of 2") as refused:
        t.publish([b"4\n", b"5\n"])
    assert not isinstance(refused.value, DeliveryUnknown)
    assert admin.ready(queue) == 2


def test_forked_child_publishes_on_its_own_connection(
    amqp_url: str, unique_prefix: str, admin: Admin
) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix)
    t.publish([b"parent-1"])
    pid = os.fork()
    if pid == 0:  # the child: same transport object, inherited socket
        code = 1
        try:
            t.publish([b"child"])
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    t.publish([b"parent-2"])  # the parent's connection was not disturbed by the child
    sub = t.subscribe("celery_flow", "c")
    assert sorted(m.data for m in read_all(sub, 3)) == [b"child", b"parent-1", b"parent-2"]


def test_publishing_without_confirms_also_delivers(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix, confirm=False)
    t.publish([b"x"] * 300)
    wait_for(
        lambda: admin.ready(f"{unique_prefix}.events") == 2, 10, "300 events queued as 256 + 44", retry_on=()
    )


# ---- URLs and errors -----------------------------------------------------------------------------


def test_url_forms() -> None:
    p = parse_amqp_url("amqp://user:p%40ss@rabbit.example:5673/my%2Fvhost?heartbeat=10")
    assert (p.host, p.port, p.userid, p.password, p.vhost, p.tls) == (
        "rabbit.example",
        5673,
        "user",
        "p@ss",
        "my/vhost",
        False,
    )
    assert parse_amqp_url("amqp://h//").vhost == "/"
    assert parse_amqp_url("amqp://h/").vhost == "/"
    assert parse_amqp_url("amqp://h").vhost == "/"
    assert parse_amqp_url("pyamqp://h/v").vhost == "v"
    default = parse_amqp_url("amqp://")
    assert (default.host, default.port, default.userid, default.password) == (
        "localhost",
        5672,
        "guest",
        "guest",
    )
    tls = parse_amqp_url("amqps://u:p@h/v")
    assert (tls.tls, tls.port) == (True, 5671)
    assert AmqpTransport("amqp://h/?heartbeat=7&connect_timeout=2.5").heartbeat == 7
    assert isinstance(from_url("pyamqp://guest:guest@127.0.0.1/v"), AmqpTransport)


@pytest.mark.parametrize(
    "url",
    ["amqp://h:notaport/v", "amqp://h:99999/v", "amqp://h/v?heartbeat=soon"],
)
def test_bad_url_is_a_one_line_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        AmqpTransport(url.replace("//h", "//u:secret@h"))
    assert "\n" not in str(err.value)
    assert "amqp://" in str(err.value)
    assert "secret" not in str(err.value)


def test_unreachable_server_fails_fast_with_redacted_url() -> None:
    t = from_url("amqp://guest:s3cret@127.0.0.1:1/v", prefix="x")
    assert "s3cret" not in t.safe_url
    start = time.monotonic()
    with pytest.raises(TransportError) as err:
        t.publish([b"x"])
    assert time.monotonic() - start < 5
    assert "s3cret" not in str(err.value)
    assert "refused" in str(err.value)
    with pytest.raises(TransportError):
        t.ping()
    with pytest.raises(TransportError):
        t.subscribe("celery_flow", "c")


def test_wrong_password_and_missing_vhost_say_what_to_fix(amqp_url: str) -> None:
    p = parse_amqp_url(amqp_url)
    with pytest.raises(TransportError, match="login refused"):
        AmqpTransport(f"amqp://guest:wrong@{p.hostport}/{p.vhost}").ping()
    with pytest.raises(TransportError, match="vhost 'no_such_vhost_cf'"):
        AmqpTransport(f"amqp://guest:guest@{p.hostport}/no_such_vhost_cf").ping()


def test_ping_answers(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t: Any = from_url(amqp_url, prefix=unique_prefix)
    t.ping()
    t.close()
    t.ping()  # reconnects after close


# ---- a real prefork worker -----------------------------------------------------------------------

PREFORK_APP = textwrap.dedent(
    """
    import os

    from celery import Celery

    import celery_flow

    app = Celery("pf", broker=os.environ["PF_BROKER"], backend=os.environ["PF_BROKER"])
    app.conf.update(task_default_queue=os.environ["PF_QUEUE"], broker_connection_retry_on_startup=True)


    @app.task(name="pf.mul")
    def mul(x, y):
        return x * y


    celery_flow.init(app, transport_url=os.environ["PF_AMQP"], prefix=os.environ["PF_PREFIX"])
    """
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_prefork_worker_children_publish_over_amqp(
    amqp_url: str, redis_url: str, unique_prefix: str, admin: Admin, tmp_path: Any
) -> None:
    """Every pool child publishes on its own connection (the parent's socket is never shared)."""
    from celery import Celery

    from celery_flow.events import Event, decode

    (tmp_path / "pf_app.py").write_text(PREFORK_APP)
    queue = f"pf_{unique_prefix}"
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "PF_BROKER": redis_url,
        "PF_QUEUE": queue,
        "PF_AMQP": amqp_url,
        "PF_PREFIX": unique_prefix,
    }
    sub = from_url(amqp_url, prefix=unique_prefix).subscribe("celery_flow", "reader")
    producer = Celery("pf-producer", broker=redis_url, backend=redis_url, set_as_current=False)
    try:
        with prefork_worker("pf_app", f"pf_{unique_prefix}@%h", env, tmp_path) as worker:
            results = [producer.send_task("pf.mul", (i, 3), queue=queue) for i in range(20)]
            assert [r.get(timeout=60) for r in results] == [3 * i for i in range(20)]
            ids = {r.id for r in results}
            events: list[Event] = []

            def all_succeeded() -> bool:
                batch = sub.read(500, 0.3)
                events.extend(decode(m.data) for m in batch)
                sub.ack([m.id for m in batch])
                # `received` comes from the worker's main process, the rest from the children: wait for all.
                return all(
                    ids <= {e.task_id for e in events if e.type == t} for t in ("received", "succeeded")
                )

            wait_for(all_succeeded, 20, "every task's received and succeeded events", interval=0, retry_on=())
            for task_id in ids:
                mine = [e for e in events if e.task_id == task_id]
                assert {"received", "started", "succeeded"} <= {e.type for e in mine}, task_id
            child_pids = {e.pid for e in events if e.type == "succeeded"}
            assert worker.pid not in child_pids  # published from the forked pool children
    finally:
        producer.close()
        sub.close()


# ---- TLS -----------------------------------------------------------------------------------------


def _self_signed_tls(directory: Path) -> tuple[str, ssl.SSLContext]:
    """(certificate file, server context): a throwaway self-signed certificate for localhost."""
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return cert, ctx


def test_amqps_verifies_the_broker_certificate(
    amqp_url: str, unique_prefix: str, admin: Admin, tmp_path: Path
) -> None:
    p = parse_amqp_url(amqp_url)
    cert, ctx = _self_signed_tls(tmp_path)
    tls = TcpProxy((p.host, p.port), tls=ctx).start()  # a TLS endpoint in front of the plain port
    try:
        base = f"amqps://guest:guest@localhost:{tls.port}/{p.vhost}"
        # An unknown certificate is refused: a clear error, quickly, no silent downgrade.
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            AmqpTransport(base, prefix=unique_prefix).ping()
        t = from_url(f"{base}?ca_certs={cert}", prefix=unique_prefix)
        sub = t.subscribe("celery_flow", "tls")
        t.publish([b"over tls"])
        got = read_all(sub, 1)
        assert [m.data for m in got] == [b"over tls"]
        sub.ack([m.id for m in got])
        assert sub.lag() == 0
        sub.close()
        t.close()
    finally:
        tls.stop()


# ---- batch framing (transport/base.py `frames`) --------------------------------------------------


def test_a_batch_is_one_ndjson_message_read_whole(amqp_url: str, unique_prefix: str, admin: Admin) -> None:
    t = AmqpTransport(amqp_url, prefix=unique_prefix)
    payloads = [f'{{"n":{i}}}'.encode() for i in range(300)]
    t.publish(payloads)
    t.publish([b"lone"])
    assert admin.ready(f"{unique_prefix}.events") == 3  # 256 + 44 events, then the lone one
    sub = t.subscribe("celery_flow", "reader")
    first = wait_for(lambda: sub.read(1, 0.2), 10, "the first message", interval=0, retry_on=())
    assert [m.data for m in first] == payloads[:256]  # one message read whole, never split
    assert len({m.id for m in first}) == 1
    rest = read_all(sub, 45)
    assert [m.data for m in first + rest] == [*payloads, b"lone"]
    sub.ack(list(dict.fromkeys(m.id for m in first + rest)))
    wait_for(lambda: sub.lag() == 0, 10, "the batch messages to be acked", retry_on=())
    sub.close()
    t.close()
