"""RabbitMQ transport over py-amqp (DESIGN.md §3), one module per concern:

- `topology`: the fanout exchange, one queue per consumer group, and their retention arguments;
- `connection`: what an amqp:// URL says, opening and dropping a connection, failures told in one line;
- `publish`: `AmqpTransport`, its options and the publishing side (confirms, blocked connections, fork);
- `consume`: `AmqpSubscription`, one competing consumer on a group's queue.
"""

from __future__ import annotations

from celery_flow.transport.amqp.connection import AmqpParams, parse_amqp_url
from celery_flow.transport.amqp.consume import AmqpSubscription
from celery_flow.transport.amqp.publish import AmqpTransport
from celery_flow.transport.amqp.topology import exchange_name, queue_arguments, queue_name

__all__ = [
    "AmqpParams",
    "AmqpSubscription",
    "AmqpTransport",
    "exchange_name",
    "parse_amqp_url",
    "queue_arguments",
    "queue_name",
]
