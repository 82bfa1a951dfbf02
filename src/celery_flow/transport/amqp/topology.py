"""The RabbitMQ topology: a durable fanout exchange `{prefix}.events` and one durable queue per consumer
group, with the retention arguments every declaration of a queue uses.

The exchange is *fanout*: it belongs to celery-flow alone, so there is nothing to route, and every queue
bound to it (one per consumer group) gets every event, as a Redis consumer group does. The default group's
queue is `{prefix}.events` (exchange and queue names live in separate namespaces); another group `g` gets
`{prefix}.events.g`. All `consume` processes of one group share its queue as competing consumers. The
publisher declares the default queue too, so events published before any server ever ran are kept (within
the retention bound) instead of being dropped by an exchange with no queue; a non-default group only sees
events published after it first subscribed.

Retention. The queue is a buffer between the user's processes and the server, never the history: it is
declared with `x-max-length` (= `maxlen` messages) and `x-max-length-bytes` (= `maxlen` KiB; a message
is one event or a batch of up to 256 as newline-delimited JSON, content type `application/x-ndjson`,
see `base.frames`), oldest dropped first (`x-overflow: drop-head`), and
`x-message-ttl` (= `ttl`, default one day like CELERY_FLOW_TTL; `ttl=0` turns the age bound off), so an
absent server can never fill the broker. Queue arguments cannot change once declared (RabbitMQ answers
PRECONDITION_FAILED): the publisher only declares a queue that does not exist yet, and the consumer,
finding the queue declared with other arguments, consumes it as it is and logs one line naming the fix
(delete the queue, or use the options it was created with). A retention setting therefore never stops
events flowing, in either direction. Events are published as mandatory: if the queue is deleted (say,
to change its retention) while no server runs, the first batch that reaches no queue comes back, the
publish fails (the publisher keeps the batch and retries) and the reconnect declares the queue again.
"""

from __future__ import annotations

from typing import Any

from celery_flow.settings import DEFAULT_GROUP, DEFAULT_TTL

__all__ = ["exchange_name", "queue_arguments", "queue_name"]

_BYTES_PER_EVENT = 1024


def exchange_name(prefix: str) -> str:
    return f"{prefix}.events"


def queue_name(prefix: str, group: str = DEFAULT_GROUP) -> str:
    return f"{prefix}.events" if group == DEFAULT_GROUP else f"{prefix}.events.{group}"


def queue_arguments(maxlen: int, ttl: float | None) -> dict[str, Any]:
    """The retention arguments every declaration of an events queue uses (they must match exactly)."""
    # A message carries one event or a batch of up to 256 (base.frames), so a count alone cannot bound
    # the events kept: the byte bound (maxlen x 1 KiB, about maxlen single events) does; the count
    # caps a flood of lone events.
    args: dict[str, Any] = {
        "x-max-length": int(maxlen),
        "x-max-length-bytes": int(maxlen) * _BYTES_PER_EVENT,
        "x-overflow": "drop-head",
    }
    effective = DEFAULT_TTL if ttl is None else ttl
    if effective > 0:
        args["x-message-ttl"] = int(effective * 1000)
    return args
