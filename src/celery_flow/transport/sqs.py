"""Amazon SQS transport: one standard queue `{prefix}-events` per consumer group, over boto3.

URL. kombu's SQS convention, so a Celery-on-SQS user reuses their broker URL: `sqs://` takes credentials
from the standard AWS chain (environment, profile, instance role), `sqs://KEY:SECRET@` from the URL
(URL-quoted), and a host (`sqs://KEY:SECRET@localhost:9324`) is the endpoint, `https` only when
`is_secure` is true, as kombu does. Without a host, botocore picks the endpoint: AWS_ENDPOINT_URL_SQS
or AWS_ENDPOINT_URL when set, else the region's. `region` and `is_secure` come from the URL's query or
the options (`init()` copies them from the app's `broker_transport_options`), the region else from the
AWS chain, else `us-east-1` (kombu's default).

Publishing. The events of a publish are framed as for the other transports (`base.frames`, newline-
delimited JSON marked by a `content_type` message attribute), with frames at most MESSAGE_BYTES, and
sent with SendMessageBatch: at most 10 messages and REQUEST_BYTES per request, so a batch of 1,000
events is usually two or three requests. An event too large for any SQS message cannot travel: it is
replaced by a `publisher.dropped` event (dropped=1) and logged, so the server counts the loss, as the
other transports' consumers count an oversize entry. Sockets time out after about a second and
botocore's own retries are off, so a slow, failing or frozen endpoint stalls only the publisher's
thread; a request that may have been received raises DeliveryUnknown (the store keeps a resent event
once). The queue is created on first use if missing.

Consuming. Long polling (ReceiveMessage waits up to the read's timeout, whole seconds, at most 20) with a
visibility timeout (`visibility_timeout`, 12 s by default: a dead member's messages are folded by another
within 15 s, as Redis claims its entries); messages are deleted (DeleteMessageBatch) only once the store
committed them, so a consumer killed mid-batch loses nothing: SQS hands its messages to any member once
their visibility timeout ends, and the store applies each event once by its id. While a member holds
messages (a long fold, a store outage) a thread of its own extends their visibility every third of the
timeout (ChangeMessageVisibilityBatch), so a live member's batch never reappears to another. Every
consumer of a group shares the group's queue.
Queues are created with MessageRetentionPeriod = `ttl` (default one day, clamped to SQS's 60 s..14 days;
`ttl=0`, no age bound, gets the 14-day maximum); an existing queue keeps its own attributes.

Consumer groups. The publisher sends to `{prefix}-events`, the default group's queue; another group `g`
reads `{prefix}-events-g`, which gets events only through an SNS topic: with `topic_arn` set, the
publisher sends to that topic (PublishBatch, the same limits) and every queue subscribed to it with raw
message delivery gets every event (docs/transports.md).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celery_flow.errors import ConfigError
from celery_flow.events import encode, make_event, process_identity
from celery_flow.ratelimit import RateLimitedLog
from celery_flow.settings import DEFAULT_GROUP, DEFAULT_PREFIX, DEFAULT_TTL
from celery_flow.transport.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_SOCKET_TIMEOUT,
    NDJSON,
    DeliveryUnknown,
    Message,
    TransportError,
    frames,
    unframe,
)
from celery_flow.transport.urls import redact_url

try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
    )
except ImportError:  # pragma: no cover - the message names the fix
    raise ConfigError("sqs:// URLs need boto3: pip install 'celery-flow[sqs]'") from None

__all__ = ["SqsSubscription", "SqsTransport", "queue_name"]

log = logging.getLogger("celery_flow.transport.sqs")

#: SQS's limits: a message and a whole SendMessageBatch request carry at most 256 KiB (bodies and
#: attributes), a request at most 10 messages. Frames leave room for the attribute and the JSON envelope.
REQUEST_BYTES = 256 * 1024
MESSAGE_BYTES = REQUEST_BYTES - 1024
BATCH_MESSAGES = 10
#: Retention SQS allows (seconds).
MIN_RETENTION = 60
MAX_RETENTION = 14 * 86_400
DEFAULT_VISIBILITY_TIMEOUT = 12
DEFAULT_REGION = "us-east-1"
MAX_WAIT = 20
LAG_INTERVAL = 15.0
_CONTENT_TYPE = "content_type"
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_TRUE = {"1", "true", "yes", "on"}
_NONCHARACTERS = re.compile("[\ufffe\uffff]")


def queue_name(prefix: str, group: str = DEFAULT_GROUP) -> str:
    """The group's queue: `{prefix}-events` for the default group, `{prefix}-events-{group}` else."""
    return f"{prefix}-events" if group == DEFAULT_GROUP else f"{prefix}-events-{group}"


def retention(ttl: float | None) -> int:
    """MessageRetentionPeriod for `ttl` seconds, within what SQS allows; 0 (no age bound) is the maximum."""
    effective = DEFAULT_TTL if ttl is None else ttl
    if effective <= 0:
        return MAX_RETENTION
    return int(min(MAX_RETENTION, max(MIN_RETENTION, effective)))


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NoCredentialsError):
        return (
            "no AWS credentials: put them in the URL (sqs://KEY:SECRET@) or in the standard AWS chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role)"
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"


def _is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _MISSING


def _sent_nothing(exc: BaseException) -> bool:
    """The request never reached the endpoint (or the endpoint refused it whole): nothing was stored."""
    return isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, NoCredentialsError, ClientError))


class SqsTransport:
    """Transport over one SQS queue (or an SNS topic fanning out to queues). Options: `from_url`."""

    def __init__(
        self,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        ttl: float | None = None,
        maxlen: int | None = None,
        region: str | None = None,
        is_secure: bool | str | None = None,
        visibility_timeout: int | None = None,
        topic_arn: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    ) -> None:
        # `maxlen` is accepted like the other transports' option: SQS bounds a queue by age only.
        del maxlen
        self.url = url
        self.safe_url = redact_url(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"bad SQS URL {self.safe_url!r}: {exc}") from None
        query = dict(parse_qsl(parts.query))
        user = unquote(parts.username or "") or None
        password = unquote(parts.password or "") or None
        if (user is None) != (password is None):
            raise ConfigError(
                f"bad SQS URL {self.safe_url!r}: give both key and secret (sqs://KEY:SECRET@) or neither "
                "(the standard AWS credential chain)"
            )
        self.access_key, self.secret_key = user, password
        self.is_secure = _bool(query.get("is_secure", is_secure))
        self.endpoint_url: str | None = None
        if parts.hostname:
            scheme = "https" if self.is_secure else "http"  # as kombu builds it from the URL's host
            self.endpoint_url = f"{scheme}://{parts.hostname}" + (f":{port}" if port else "")
        self.region = query.get("region") or region
        try:
            vt = int(query.get("visibility_timeout", visibility_timeout or DEFAULT_VISIBILITY_TIMEOUT))
        except ValueError:
            raise ConfigError(f"visibility_timeout in {self.safe_url!r} must be whole seconds") from None
        if not 0 < vt <= 43_200:
            raise ConfigError(f"visibility_timeout must be 1..43200 seconds (SQS's range), got {vt}")
        self.visibility_timeout = vt
        self.topic_arn = query.get("topic_arn") or topic_arn
        self.prefix = prefix
        self.queue = queue_name(prefix)
        if not _QUEUE_NAME.match(self.queue):
            raise ConfigError(
                f"prefix {prefix!r} gives the SQS queue name {self.queue!r}: SQS allows 1-80 letters, "
                "digits, '-' and '_' (set a prefix of those)"
            )
        self.ttl = ttl
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self._client: Any = None  # created on first use, in the publisher's thread
        self._queue_url: str | None = None
        self._log = RateLimitedLog(log)

    # ---- clients and queues -------------------------------------------------------------------

    def client(self, service: str = "sqs", read_timeout: float | None = None) -> Any:
        """A new boto3 client for `service` with this URL's endpoint, region, credentials and timeouts."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region
        )
        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.socket_timeout if read_timeout is None else read_timeout,
            retries={"total_max_attempts": 1},  # the publisher and the consumer retry themselves
            parameter_validation=False,
            region_name=session.region_name or DEFAULT_REGION,
        )
        options: dict[str, Any] = {"config": config}
        if self.endpoint_url is not None:  # SNS too: an emulator (moto, LocalStack) serves both
            options["endpoint_url"] = self.endpoint_url
        if self.is_secure is not None:
            options["use_ssl"] = self.is_secure
        return session.client(service, **options)

    def ensure_queue(self, client: Any, name: str) -> str:
        """The queue's URL, creating the queue (retention from `ttl`) when it does not exist."""
        try:
            return str(client.get_queue_url(QueueName=name)["QueueUrl"])
        except ClientError as exc:
            if not _is_missing(exc):
                raise
        attributes = {
            "MessageRetentionPeriod": str(retention(self.ttl)),
            "VisibilityTimeout": str(self.visibility_timeout),
        }
        try:
            return str(client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
        except ClientError as exc:
            # Created a moment ago by another process with other attributes: use it as it is.
            if "QueueNameExists" not in str(exc.response.get("Error", {}).get("Code", "")):
                raise
            return str(client.get_queue_url(QueueName=name)["QueueUrl"])

    def _wrap(self, exc: BaseException) -> TransportError:
        return TransportError(f"sqs {self.safe_url}: {_describe(exc)}")

    # ---- publishing ---------------------------------------------------------------------------

    def _bodies(self, payloads: Sequence[bytes]) -> list[tuple[str, bool]]:
        """(body, is_batch) per message; an event larger than a message becomes a `publisher.dropped`."""
        out: list[tuple[str, bool]] = []
        for data, events in frames(payloads, MESSAGE_BYTES):
            try:
                body = data.decode("utf-8")
            except UnicodeDecodeError:
                body = None
            if body is None or len(data) > MESSAGE_BYTES:
                self._log.warning(
                    "oversize",
                    "celery-flow: an event of %d bytes cannot travel in an SQS message (at most %d bytes "
                    "of UTF-8): dropped and counted as such",
                    len(data),
                    MESSAGE_BYTES,
                )
                hostname, pid = process_identity()
                body = encode(make_event("publisher.dropped", dropped=1, hostname=hostname, pid=pid)).decode()
                events = 1
            if "\ufffe" in body or "\uffff" in body:
                # The only characters valid in JSON text that SQS refuses; they can stand only inside
                # JSON strings, where their escape means the same.
                body = _NONCHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", body)
            out.append((body, events > 1))
        return out

    def _requests(self, bodies: list[tuple[str, bool]]) -> list[list[dict[str, Any]]]:
        """Entries of SendMessageBatch / PublishBatch requests within SQS's limits."""
        requests: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        size = 0
        for body, is_batch in bodies:
            # Bytes the request's limit counts: the body, plus the attribute's name, type and value.
            length = len(body.encode("utf-8")) if not body.isascii() else len(body)
            length += len(_CONTENT_TYPE) + len("String") + len(NDJSON) if is_batch else 0
            if current and (len(current) == BATCH_MESSAGES or size + length > REQUEST_BYTES):
                requests.append(current)
                current, size = [], 0
            key = "Message" if self.topic_arn else "MessageBody"
            entry: dict[str, Any] = {"Id": str(len(current)), key: body}
            if is_batch:
                entry["MessageAttributes"] = {_CONTENT_TYPE: {"DataType": "String", "StringValue": NDJSON}}
            current.append(entry)
            size += length
        if current:
            requests.append(current)
        return requests

    def publish(self, payloads: Sequence[bytes]) -> None:
        if not payloads:
            return
        stored = False  # some request stored events, or may have: from then on the outcome is unknown
        try:
            if self._client is None:
                self._client = self.client("sns" if self.topic_arn else "sqs")
            if self.topic_arn is None and self._queue_url is None:
                self._queue_url = self.ensure_queue(self._client, self.queue)
            for entries in self._requests(self._bodies(payloads)):
                try:
                    resp = self._send(entries)
                except (BotoCoreError, ClientError) as exc:
                    if not _sent_nothing(exc):
                        stored = True
                    raise
                stored = True
                self._check_failed(entries, resp.get("Failed") or [])
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError) and _is_missing(exc):
                self._queue_url = None  # deleted: the next attempt creates it again
            if stored:
                raise DeliveryUnknown(f"{self._wrap(exc)}; SQS may have stored part of the batch") from None
            raise self._wrap(exc) from None

    def _send(self, entries: list[dict[str, Any]]) -> Any:
        if self.topic_arn is not None:
            return self._client.publish_batch(TopicArn=self.topic_arn, PublishBatchRequestEntries=entries)
        return self._client.send_message_batch(QueueUrl=self._queue_url, Entries=entries)

    def _check_failed(self, entries: list[dict[str, Any]], failed: list[dict[str, Any]]) -> None:
        if not failed:
            return
        retryable = [f for f in failed if not f.get("SenderFault")]
        if len(failed) > len(retryable):
            # A message SQS refuses as it is would be refused again: never retry it into a loop.
            self._log.warning(
                "refused",
                "celery-flow: SQS refused %d message(s) for good: %s",
                len(failed) - len(retryable),
                failed[0].get("Message") or failed[0].get("Code"),
            )
        if retryable:
            raise DeliveryUnknown(
                f"sqs {self.safe_url}: {len(retryable)} of {len(entries)} message(s) not stored "
                f"({retryable[0].get('Code')}); the rest were"
            )

    def subscribe(self, group: str, consumer: str) -> SqsSubscription:
        return SqsSubscription(self, group, consumer)

    def ping(self) -> None:
        try:
            if self._client is None:
                self._client = self.client("sns" if self.topic_arn else "sqs")
            if self.topic_arn is not None:
                self._client.get_topic_attributes(TopicArn=self.topic_arn)
            else:
                self._client.get_queue_url(QueueName=self.queue)
        except ClientError as exc:
            if not _is_missing(exc):  # the endpoint answered: a queue not created yet is no outage
                raise self._wrap(exc) from None
        except BotoCoreError as exc:
            raise self._wrap(exc) from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


class SqsSubscription:
    """One competing consumer on a group's queue."""

    def __init__(self, transport: SqsTransport, group: str, consumer: str) -> None:
        self._t = transport
        self.group = group
        self.consumer = consumer
        self.queue = queue_name(transport.prefix, group)
        if not _QUEUE_NAME.match(self.queue):
            raise ConfigError(
                f"consumer group {group!r} gives the SQS queue name {self.queue!r}: SQS allows 1-80 "
                "letters, digits, '-' and '_'"
            )
        # The read timeout outlives the longest long poll.
        self._client = transport.client(read_timeout=MAX_WAIT + 10)
        # Received and not deleted yet: message id -> its latest receipt handle (a redelivery has a new one),
        # and when its visibility timeout last began; shared with the keeper thread under `_held_lock`.
        self._handles: dict[str, str] = {}
        self._visible_from: dict[str, float] = {}
        self._held_lock = threading.Lock()
        self._keeper: threading.Thread | None = None
        self._closing = threading.Event()
        self._lag: int | None = None
        self._lag_at = -LAG_INTERVAL
        try:
            self._url = transport.ensure_queue(self._client, self.queue)
            if transport.topic_arn is not None:
                self._subscribe_to(transport.topic_arn)
        except (BotoCoreError, ClientError) as exc:
            self._client.close()
            raise transport._wrap(exc) from None

    def _subscribe_to(self, topic_arn: str) -> None:
        """Subscribe the group's queue to the topic (raw delivery), allowing the topic to send to a queue
        that has no access policy yet; SNS answers a repeated identical subscribe with the same one."""
        arn = self._client.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn", "Policy"])
        attrs = arn["Attributes"]
        if "Policy" not in attrs:
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": attrs["QueueArn"],
                        "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                    }
                ],
            }
            self._client.set_queue_attributes(QueueUrl=self._url, Attributes={"Policy": json.dumps(policy)})
        sns = self._t.client("sns")
        try:
            sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=attrs["QueueArn"],
                Attributes={"RawMessageDelivery": "true"},
            )
        finally:
            sns.close()

    def read(self, count: int, timeout: float) -> list[Message]:
        wait = min(MAX_WAIT, max(0, round(timeout)))
        out: list[Message] = []
        try:
            # One long poll, then while a backlog fills whole receives, a few more without waiting.
            for _ in range(max(1, -(-count // BATCH_MESSAGES))):
                resp = self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=min(BATCH_MESSAGES, max(1, count)),
                    WaitTimeSeconds=wait,
                    VisibilityTimeout=self._t.visibility_timeout,
                    MessageAttributeNames=[_CONTENT_TYPE],
                )
                received = resp.get("Messages") or []
                for msg in received:
                    out.extend(self._messages(msg))
                if received and self._keeper is None:
                    self._start_keeper()
                if len(received) < BATCH_MESSAGES or len({m.id for m in out}) >= count:
                    break
                wait = 0
        except (BotoCoreError, ClientError) as exc:
            if out:  # what was received is handed out; the error shows again on the next read
                return out
            raise self._t._wrap(exc) from None
        return out

    def _messages(self, msg: Mapping[str, Any]) -> list[Message]:
        mid = str(msg["MessageId"])
        with self._held_lock:
            self._handles[mid] = str(msg["ReceiptHandle"])
            self._visible_from[mid] = time.monotonic()
        data = str(msg.get("Body", "")).encode("utf-8", "surrogateescape")
        attribute = (msg.get("MessageAttributes") or {}).get(_CONTENT_TYPE) or {}
        if attribute.get("StringValue") == NDJSON:
            return unframe(mid, data)
        return [Message(mid, data)]

    def _start_keeper(self) -> None:
        self._keeper = threading.Thread(
            target=self._keep_visible, name="celery-flow-sqs-visibility", daemon=True
        )
        self._keeper.start()

    def _keep_visible(self) -> None:
        """Extend the visibility timeout of each message held for a third of it (looking twice as often,
        so a message is extended at most halfway through its timeout)."""
        vt = self._t.visibility_timeout
        age = vt / 3
        client: Any = None
        try:
            while not self._closing.wait(max(0.2, age / 2)):
                now = time.monotonic()
                with self._held_lock:
                    due = [(m, h) for m, h in self._handles.items() if now - self._visible_from[m] >= age]
                for start in range(0, len(due), BATCH_MESSAGES):
                    part = due[start : start + BATCH_MESSAGES]
                    try:
                        client = client or self._t.client()
                        resp = client.change_message_visibility_batch(
                            QueueUrl=self._url,
                            Entries=[
                                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": vt}
                                for i, (_, h) in enumerate(part)
                            ],
                        )
                    except (BotoCoreError, ClientError) as exc:  # tried again next period
                        log.debug("sqs: cannot extend visibility: %s", _describe(exc))
                        break
                    done = {str(e.get("Id")) for e in resp.get("Successful") or []}
                    with self._held_lock:
                        for i, (mid, _) in enumerate(part):
                            if str(i) in done and mid in self._visible_from:
                                self._visible_from[mid] = now
        finally:
            if client is not None:
                client.close()

    def ack(self, ids: Sequence[str]) -> None:
        with self._held_lock:
            handles = [(mid, self._handles[mid]) for mid in dict.fromkeys(ids) if mid in self._handles]
        try:
            for start in range(0, len(handles), BATCH_MESSAGES):
                part = handles[start : start + BATCH_MESSAGES]
                resp = self._client.delete_message_batch(
                    QueueUrl=self._url,
                    Entries=[{"Id": str(i), "ReceiptHandle": h} for i, (_, h) in enumerate(part)],
                )
                with self._held_lock:
                    for mid, _ in part:
                        self._handles.pop(mid, None)
                        self._visible_from.pop(mid, None)
                if resp.get("Failed"):
                    # An expired receipt handle: the message went back to the queue and comes again,
                    # to be applied once more (idempotent per event id) and deleted then.
                    log.debug("sqs: %d deletion(s) refused: %s", len(resp["Failed"]), resp["Failed"][0])
        except (BotoCoreError, ClientError) as exc:
            raise self._t._wrap(exc) from None

    def lag(self) -> int | None:
        """Messages waiting plus messages received and not deleted yet (SQS's approximate counts, which
        trail by up to a minute anyway), asked at most every LAG_INTERVAL seconds: each ask is a request."""
        now = time.monotonic()
        if now < self._lag_at + LAG_INTERVAL:
            return self._lag
        self._lag_at = now
        self._lag = self._ask_lag()
        return self._lag

    def _ask_lag(self) -> int | None:
        try:
            attrs = self._client.get_queue_attributes(
                QueueUrl=self._url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._t._wrap(exc) from None
        except BotoCoreError as exc:
            raise self._t._wrap(exc) from None
        return int(attrs.get("ApproximateNumberOfMessages", 0)) + int(
            attrs.get("ApproximateNumberOfMessagesNotVisible", 0)
        )

    def close(self) -> None:
        self._closing.set()
        if self._keeper is not None:
            self._keeper.join(timeout=2.0)
        with self._held_lock:
            self._handles.clear()
            self._visible_from.clear()
        self._client.close()
