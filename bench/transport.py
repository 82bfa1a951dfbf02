"""Transport throughput: Redis Streams vs RabbitMQ vs SQS, measured in the same run on the same machine.

For each transport, with realistic encoded events (bench/_common.py, ~300-600 bytes each):

- publish: events per second through `Transport.publish()` in batches of 100, as the tracking library's
  background thread calls it (RabbitMQ with and without publisher confirms; confirms are the default);
- consume: events per second through `Subscription.read(500)` + `ack()`, the consumer's loop without
  the store, for a backlog of the same events.

SQS is moto in server mode (a local emulator, started here unless CELERY_FLOW_BENCH_SQS names an
endpoint): its figures are the transport's own cost plus moto's, not what AWS's SQS would give.

Each run uses its own stream / exchange and queue and deletes them afterwards. Usage:

    python bench/transport.py                 # 20,000 events
    python bench/transport.py --events 100000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import stream
from celery_flow.events import encode
from celery_flow.transport import from_url

REDIS = os.environ.get("CELERY_FLOW_BENCH_REDIS", "redis://127.0.0.1:6379/15")
AMQP = os.environ.get("CELERY_FLOW_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
SQS = os.environ.get("CELERY_FLOW_BENCH_SQS", "")
PUBLISH_BATCH = 100
READ_BATCH = 500


@contextlib.contextmanager
def sqs_endpoint() -> Iterator[str]:
    """CELERY_FLOW_BENCH_SQS, else a moto server of this run's own."""
    if SQS:
        yield SQS
        return
    from tests.support.moto_server import MotoServer

    with MotoServer() as server:
        yield server.url


def _cleanup(kind: str, url: str, prefix: str) -> None:
    if kind == "sqs":
        from celery_flow.transport.sqs import SqsTransport

        t = SqsTransport(url, prefix=prefix)
        client = t.client()
        client.delete_queue(QueueUrl=client.get_queue_url(QueueName=t.queue)["QueueUrl"])
        client.close()
        return
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url)
        client.delete(f"{prefix}:events")
        client.close()
        return
    import amqp

    from celery_flow.transport.amqp import exchange_name, parse_amqp_url, queue_name

    p = parse_amqp_url(url)
    conn = amqp.Connection(host=p.hostport, userid=p.userid, password=p.password, virtual_host=p.vhost)
    conn.connect()
    ch = conn.channel()
    ch.queue_delete(queue_name(prefix))
    ch.exchange_delete(exchange_name(prefix))
    conn.close()


def measure(kind: str, url: str, payloads: list[bytes], **options: Any) -> tuple[float, float]:
    prefix = f"cf_bench_{uuid.uuid4().hex[:8]}"
    transport = from_url(url, prefix=prefix, **options)
    try:
        sub = transport.subscribe("celery_flow", "bench")
        transport.publish(payloads[:1])  # connect and declare outside the clock
        start = time.perf_counter()
        for i in range(1, len(payloads), PUBLISH_BATCH):
            transport.publish(payloads[i : i + PUBLISH_BATCH])
        publish_rate = (len(payloads) - 1) / (time.perf_counter() - start)

        got = 0
        start = time.perf_counter()
        while got < len(payloads):
            messages = sub.read(READ_BATCH, 1.0)
            if not messages:
                raise RuntimeError(f"{kind}: only {got} of {len(payloads)} events came back")
            sub.ack([m.id for m in messages])
            got += len(messages)
        consume_rate = got / (time.perf_counter() - start)
        sub.close()
        return publish_rate, consume_rate
    finally:
        transport.close()
        _cleanup(kind, url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    flows = max(1, args.events // 32)
    payloads = [encode(e) for e in stream(flows)][: args.events]
    size = sum(map(len, payloads)) / len(payloads)
    print(
        f"{len(payloads)} events, {size:.0f} bytes on average; publish batches of {PUBLISH_BATCH}, "
        f"reads of {READ_BATCH}"
    )
    results = {}
    with sqs_endpoint() as sqs:
        rows = [
            ("redis", "redis", REDIS, {}),
            ("amqp (confirms)", "amqp", AMQP, {}),
            ("amqp (no confirms)", "amqp", AMQP, {"confirm": False}),
            ("sqs (moto)", "sqs", sqs, {}),
        ]
        for label, kind, url, options in rows:
            results[label] = measure(kind, url, payloads, **options)
    base_pub, base_con = results["redis"]
    print(f"{'transport':<20} {'publish ev/s':>13} {'vs redis':>9} {'consume+ack ev/s':>17} {'vs redis':>9}")
    for label, (pub, con) in results.items():
        print(f"{label:<20} {pub:>13,.0f} {pub / base_pub:>8.2f}x {con:>17,.0f} {con / base_con:>8.2f}x")


if __name__ == "__main__":
    main()
