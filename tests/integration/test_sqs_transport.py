"""SqsTransport against a local SQS endpoint (moto in server mode, `sqs_url`): the delivery guarantees the
consumer relies on, mirroring tests/integration/test_redis_transport.py and test_amqp_transport.py. Each
test has its own queue (`unique_prefix`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from celery import Celery
from tests.support.canvas_app import make_app
from tests.support.events import event
from tests.support.moto_server import CELERY_SQS_OPTIONS, admin_client, endpoint_of
from tests.support.server_helpers import free_port
from tests.support.transport import read_all

import celery_flow
from celery_flow.events import decode, encode
from celery_flow.tracking.hooks import tracker_for_app
from celery_flow.transport import ConfigError, DeliveryUnknown, TransportError, from_url
from celery_flow.transport import sqs as sqs_transport
from celery_flow.transport.sqs import (
    BATCH_MESSAGES,
    MAX_RETENTION,
    MESSAGE_BYTES,
    REQUEST_BYTES,
    SqsTransport,
    queue_name,
    retention,
)
from celery_flow.transport.urls import with_sqs_options

GROUP = "celery_flow"


def _payloads(n: int, size: int = 100, tag: str = "t") -> list[bytes]:
    return [encode(event("sent", f"{tag}{i}", 1_700_000_000.0 + i, args=["x" * size])) for i in range(n)]


@pytest.fixture
def transport(sqs_url: str, unique_prefix: str) -> Iterator[SqsTransport]:
    t = from_url(sqs_url, prefix=unique_prefix, ttl=3600)
    assert isinstance(t, SqsTransport)
    yield t
    t.close()


def test_publish_read_ack_and_lag(
    transport: SqsTransport, sqs_url: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqs_transport, "LAG_INTERVAL", 0.0)  # ask SQS on every lag() call
    payloads, lone = _payloads(1000), _payloads(3, tag="lone")
    transport.publish(payloads)
    for p in lone:
        transport.publish([p])  # a lone event travels as a message of its own
    sub = transport.subscribe(GROUP, "c1")
    try:
        got = read_all(sub, 1003, count=500)
        assert sorted(m.data for m in got) == sorted(payloads + lone)
        # 1,000 events of ~250 bytes are 4 batch messages (256 events each at most), not a thousand.
        assert len({m.id for m in got}) == 3 + 4
        assert sub.lag() == len({m.id for m in got})  # received, not deleted yet
        sub.ack([m.id for m in got])
        assert sub.lag() == 0
        assert sub.read(100, 0) == []
    finally:
        sub.close()
    # The queue was created on first publish with the retention from `ttl`.
    admin = admin_client(sqs_url)
    url = admin.get_queue_url(QueueName=f"{unique_prefix}-events")["QueueUrl"]
    attrs = admin.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["MessageRetentionPeriod"] == "3600"
    admin.delete_queue(QueueUrl=url)


def test_retention_is_clamped_to_what_sqs_allows() -> None:
    assert retention(None) == 86_400  # the default ttl: one day
    assert retention(10) == 60
    assert retention(30 * 86_400) == MAX_RETENTION == 14 * 86_400
    assert retention(0) == MAX_RETENTION  # no age bound: the longest SQS keeps a message


def test_requests_stay_within_sqs_limits(transport: SqsTransport) -> None:
    # 3,000 events of ~1 KB: about 3 MB, which SQS takes as at most 10 messages / 256 KiB per request.
    payloads = _payloads(3000, size=900)
    requests = transport._requests(transport._bodies(payloads))
    for entries in requests:
        assert len(entries) <= BATCH_MESSAGES
        assert sum(len(e["MessageBody"]) + 60 for e in entries) <= REQUEST_BYTES
        assert all(len(e["MessageBody"]) <= MESSAGE_BYTES for e in entries)
    assert [json.loads(line)["id"] for e in requests for m in [e] for x in m for line in
            x["MessageBody"].split("\n")] == [json.loads(p)["id"] for p in payloads]  # fmt: skip
    transport.publish(payloads)
    sub = transport.subscribe(GROUP, "c1")
    try:
        got = read_all(sub, 3000, count=500, ack=True)
        assert sorted(m.data for m in got) == sorted(payloads)
    finally:
        sub.close()


def test_an_event_too_large_for_sqs_is_counted_as_dropped(transport: SqsTransport) -> None:
    small = _payloads(2)
    huge = encode(event("sent", "huge", 1_700_000_000.0, args=["y" * 300_000]))
    transport.publish([small[0], huge, small[1]])
    sub = transport.subscribe(GROUP, "c1")
    try:
        got = read_all(sub, 3, ack=True)
    finally:
        sub.close()
    events = sorted((decode(m.data) for m in got), key=lambda e: e.type)
    # The events around it arrive; the huge one is replaced by a drop report the server counts.
    assert [e.type for e in events] == ["publisher.dropped", "sent", "sent"]
    assert events[0].dropped == 1
    assert {e.task_id for e in events[1:]} == {"t0", "t1"}


def test_two_consumers_split_the_load(transport: SqsTransport) -> None:
    payloads = _payloads(30)
    for p in payloads:
        transport.publish([p])
    a, b = transport.subscribe(GROUP, "a"), transport.subscribe(GROUP, "b")
    try:
        seen_a: list[bytes] = []
        seen_b: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(seen_a) + len(seen_b) < 30 and time.monotonic() < deadline:
            for sub, seen in ((a, seen_a), (b, seen_b)):
                batch = sub.read(5, 0)
                seen.extend(m.data for m in batch)
                sub.ack([m.id for m in batch])
        assert seen_a, "both members got work"
        assert seen_b, "both members got work"
        assert sorted(seen_a + seen_b) == sorted(payloads)  # every event once, none twice
    finally:
        a.close()
        b.close()


def test_a_dead_consumers_messages_come_back_after_the_visibility_timeout(
    sqs_url: str, unique_prefix: str
) -> None:
    t = from_url(f"{sqs_url}?visibility_timeout=1", prefix=unique_prefix)
    payloads = _payloads(5)
    for p in payloads:
        t.publish([p])
    dead = t.subscribe(GROUP, "dead")
    taken = read_all(dead, 5)
    dead.close()  # never acknowledged: as if SIGKILLed after reading
    assert len(taken) == 5
    other = t.subscribe(GROUP, "other")
    try:
        again = read_all(other, 5, timeout=20, ack=True)
        assert sorted(m.data for m in again) == sorted(payloads)
        assert read_all(other, 1, timeout=2.5) == []  # deleted: nothing comes back a second time
    finally:
        other.close()
        t.close()


def test_a_live_consumer_keeps_its_messages_past_the_visibility_timeout(
    sqs_url: str, unique_prefix: str
) -> None:
    """A batch folded for longer than the timeout (a slow store) is not handed to another member."""
    t = from_url(f"{sqs_url}?visibility_timeout=2", prefix=unique_prefix)
    payloads = _payloads(5)
    t.publish(payloads[:1])
    t.publish(payloads[1:])
    busy = t.subscribe(GROUP, "busy")
    other = t.subscribe(GROUP, "other")
    try:
        taken = read_all(busy, 5)
        assert sorted(m.data for m in taken) == sorted(payloads)
        # Three timeouts long, the holder still folding: the other member gets nothing meanwhile.
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert other.read(10, 1) == []
        busy.ack([m.id for m in taken])
        assert read_all(other, 1, timeout=3.5) == []  # deleted: nothing ever comes back
    finally:
        busy.close()
        other.close()
        t.close()


def test_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    t = SqsTransport("sqs://AKIA:se%2Fcret@localhost:9324?region=eu-central-1")
    assert (t.access_key, t.secret_key) == ("AKIA", "se/cret")
    assert t.endpoint_url == "http://localhost:9324"  # kombu's rule: http unless is_secure
    assert t.region == "eu-central-1"
    assert t.safe_url == "sqs://AKIA:***@localhost:9324?region=eu-central-1"
    assert SqsTransport("sqs://sqs.eu-west-1.amazonaws.com", is_secure=True).endpoint_url == (
        "https://sqs.eu-west-1.amazonaws.com"
    )
    chain = SqsTransport("sqs://", region="ap-south-1")  # credentials and endpoint from the AWS chain
    assert (chain.access_key, chain.endpoint_url, chain.region) == (None, None, "ap-south-1")
    assert chain.client().meta.region_name == "ap-south-1"
    assert SqsTransport("sqs://").client().meta.region_name == "us-east-1"  # kombu's default
    # What init(app) makes of an app on `sqs://` with broker_transport_options (README's example).
    options = {"region": "eu-west-1", "is_secure": True, "polling_interval": 1}
    assert with_sqs_options("sqs://", options) == "sqs://?region=eu-west-1&is_secure=true"
    assert with_sqs_options("sqs://k:s@h:1/?region=x", options) == "sqs://k:s@h:1/?region=x&is_secure=true"
    assert with_sqs_options("sqs://", {}) == "sqs://"
    assert SqsTransport(with_sqs_options("sqs://", options)).region == "eu-west-1"
    assert queue_name("cf") == "cf-events"
    assert queue_name("cf", "audit") == "cf-events-audit"


@pytest.mark.parametrize(
    ("url", "prefix", "message"),
    [
        ("sqs://onlykey@", "cf", "give both key and secret"),
        ("sqs://k:s@", "bad.prefix", "SQS allows 1-80 letters"),
        ("sqs://k:s@?visibility_timeout=soon", "cf", "whole seconds"),
        ("sqs://k:s@:99999", "cf", "bad SQS URL"),
    ],
)
def test_bad_url_is_a_one_line_config_error(url: str, prefix: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_url(url, prefix=prefix)
    assert "\n" not in str(info.value)


def test_endpoint_from_aws_endpoint_url_sqs(
    sqs_url: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", endpoint_of(sqs_url))
    t = from_url("sqs://testing:testing@", prefix=unique_prefix)  # no host: the variable decides
    try:
        t.publish(_payloads(1))
        sub = t.subscribe(GROUP, "c")
        assert len(read_all(sub, 1, ack=True)) == 1
        sub.close()
    finally:
        t.close()


def test_unreachable_endpoint_fails_fast_with_redacted_url(unique_prefix: str) -> None:
    t = from_url(f"sqs://key:topsecret@127.0.0.1:{free_port()}", prefix=unique_prefix)
    with pytest.raises(TransportError) as info:
        t.publish(_payloads(1))
    assert not isinstance(info.value, DeliveryUnknown)  # refused: nothing was sent
    assert "topsecret" not in str(info.value)
    assert "***" in str(info.value)
    with pytest.raises(TransportError):
        t.ping()


def test_tracking_follows_the_apps_sqs_broker_and_its_region(sqs_url: str, unique_prefix: str) -> None:
    """init(app) with no transport URL: events go to the app's own SQS broker, in its configured region."""
    app = make_app(sqs_url, "cache+memory://", None, main="sqs_detect")
    app.conf.broker_transport_options = {**CELERY_SQS_OPTIONS, "region": "eu-north-1"}
    celery_flow.init(app, prefix=unique_prefix)
    try:
        tracker = tracker_for_app(app)
        assert tracker is not None
        assert tracker.settings.transport_url.startswith(sqs_url)
        assert "region=eu-north-1" in tracker.settings.transport_url
        r = app.tasks["t.add"].apply_async((1, 2), queue=f"q_{unique_prefix}")
        tracker.publisher.flush(5.0)
        # moto keeps queues per region: the event is in eu-north-1's queue.
        reader = from_url(f"{sqs_url}?region=eu-north-1", prefix=unique_prefix)
        sub = reader.subscribe(GROUP, "check")
        got = [decode(m.data) for m in read_all(sub, 1, ack=True)]
        sub.close()
        reader.close()
        assert [(e.type, e.task_id) for e in got] == [("sent", r.id)]
        admin = admin_client(sqs_url)
        assert f"{unique_prefix}-events" not in str(admin.list_queues().get("QueueUrls", []))
    finally:
        celery_flow.shutdown(app)


def test_boto3_is_imported_only_for_sqs_urls(redis_url: str, sqs_url: str) -> None:
    """A worker on Redis pays neither boto3's import time nor its memory; a missing boto3 names the extra."""
    script = textwrap.dedent(
        f"""
        import sys
        from celery import Celery
        import celery_flow
        app = Celery("lazy", broker={redis_url!r})
        celery_flow.init(app, prefix="lazy_check")
        celery_flow.shutdown(app)
        assert "boto3" not in sys.modules and "botocore" not in sys.modules, "imported for redis://"
        sys.modules["boto3"] = None  # as if the extra were not installed
        from celery_flow.transport import ConfigError, from_url
        try:
            from_url({sqs_url!r})
        except ConfigError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "sqs:// URLs need boto3: pip install 'celery-flow[sqs]'"


def test_sns_topic_gives_every_group_its_own_copy(sqs_url: str, unique_prefix: str) -> None:
    """With `topic_arn`, the publisher sends to the topic and each group's queue, subscribed to it with raw
    delivery when its consumer starts, gets every event (batches stay batches)."""
    sns = admin_client(sqs_url, "sns")
    topic = sns.create_topic(Name=f"{unique_prefix}-events")["TopicArn"]
    t = from_url(f"{sqs_url}?topic_arn={topic}", prefix=unique_prefix)
    main, audit = t.subscribe(GROUP, "main"), t.subscribe("audit", "a1")
    again = t.subscribe("audit", "a2")  # a second member of a group subscribes nothing twice
    try:
        payloads, lone = _payloads(600), _payloads(1, tag="lone")
        t.publish(payloads)
        t.publish(lone)
        for sub in (main, audit):
            got = read_all(sub, 601, count=500, ack=True)
            assert sorted(m.data for m in got) == sorted(payloads + lone)
            assert len({m.id for m in got}) == 3 + 1  # 600 events in 3 batch messages, and the lone one
        assert read_all(again, 1, timeout=1) == []
        assert len(sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]) == 2
        names = {u.rsplit("/", 1)[1] for u in admin_client(sqs_url).list_queues()["QueueUrls"]}
        assert {f"{unique_prefix}-events", f"{unique_prefix}-events-audit"} <= names
    finally:
        for sub in (main, audit, again):
            sub.close()
        t.close()
        sns.delete_topic(TopicArn=topic)


def test_celery_flow_command_takes_the_apps_sqs_region(sqs_url: str) -> None:
    """`celery -A proj flow server` reads the app's SQS broker with its region, as init(app) does."""
    from types import SimpleNamespace

    import click

    from celery_flow.cli import _app_broker, celery_command

    app = make_app(sqs_url, "cache+memory://", None, main="sqs_cli")
    app.conf.broker_transport_options = {"region": "eu-north-1", "is_secure": False}
    with click.Context(celery_command, obj=SimpleNamespace(app=app)) as ctx:
        url = _app_broker(ctx)
    assert url == f"{sqs_url}?region=eu-north-1&is_secure=false"
    transport = from_url(str(url))
    assert isinstance(transport, SqsTransport)
    assert (transport.region, transport.is_secure) == ("eu-north-1", False)


def test_characters_sqs_refuses_travel_escaped(transport: SqsTransport) -> None:
    """U+FFFE and U+FFFF are valid in JSON but not in an SQS message: they travel as JSON escapes."""
    payload = encode(event("sent", "odd", 1_700_000_000.0, args=["a\uffffb\ufffe"]))
    ((body, _),) = transport._bodies([payload])
    assert "\uffff" not in body
    assert "\ufffe" not in body
    transport.publish([payload])
    sub = transport.subscribe(GROUP, "c1")
    try:
        (got,) = read_all(sub, 1, ack=True)
    finally:
        sub.close()
    assert decode(got.data).args == ["a\uffffb\ufffe"]


def test_the_readmes_sqs_example(sqs_url: str, unique_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Celery(broker="sqs://")` with a region in broker_transport_options and the AWS chain (here: the
    environment, the endpoint from AWS_ENDPOINT_URL_SQS): `init(app)` alone puts events in that region."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", endpoint_of(sqs_url))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    app = Celery("readme_sqs", broker="sqs://", set_as_current=False)
    app.conf.broker_transport_options = {"region": "eu-west-1"}

    @app.task(name="t.readme_add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    celery_flow.init(app, prefix=unique_prefix)
    try:
        r = add.apply_async((1, 2), queue=f"q_{unique_prefix}")  # through kombu's SQS broker
        tracker = tracker_for_app(app)
        assert tracker is not None
        assert tracker.publisher.flush(5.0)
    finally:
        celery_flow.shutdown(app)
    reader = from_url(f"{sqs_url}?region=eu-west-1", prefix=unique_prefix)
    sub = reader.subscribe(GROUP, "check")
    got = [decode(m.data) for m in read_all(sub, 1, ack=True)]
    sub.close()
    reader.close()
    assert [(e.type, e.task_id) for e in got] == [("sent", r.id)]
