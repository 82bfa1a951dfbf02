"""The typed event model: the one contract between the tracking library and the server.

Events travel as compact JSON (wire format v1, DESIGN.md §2). Encoding and decoding go through msgspec,
which validates types while it parses, so the consumer can reject bad input per event without a second
validation pass. Unknown fields are ignored, for forward compatibility.
"""

from __future__ import annotations

import os
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, TypeAlias

import msgspec

SCHEMA_VERSION: Final = 1

TaskEventType = Literal[
    "sent", "received", "started", "retried", "succeeded", "failed", "revoked", "rejected"
]
WorkerEventType = Literal["worker.online", "worker.heartbeat", "worker.offline"]
# `publisher.dropped`: a process reports how many events its bounded buffer dropped while the broker
# was slow or down, once the broker answers again (`dropped` carries the count since the last report).
MetaEventType = Literal["publisher.dropped"]
EventType = Literal[TaskEventType, WorkerEventType, MetaEventType]

TASK_EVENT_TYPES: Final[frozenset[str]] = frozenset(
    ("sent", "received", "started", "retried", "succeeded", "failed", "revoked", "rejected")
)
WORKER_EVENT_TYPES: Final[frozenset[str]] = frozenset(("worker.online", "worker.heartbeat", "worker.offline"))

# Seconds between a worker's heartbeats unless configured (init(heartbeat_interval=...)); the server
# assumes it for a worker that does not announce its own.
DEFAULT_HEARTBEAT_INTERVAL: Final = 15.0

# Largest encoded event the consumer accepts. The library caps every captured value far below this
# (max_value_size), so anything larger was not written by a well-behaved client.
MAX_EVENT_BYTES: Final = 1_048_576


class TaskInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One registered task as a worker announces it: feeds the task registry."""

    name: str
    signature: str | None = None
    doc: str | None = None


# Most entries of a beat schedule one event carries.
MAX_SCHEDULES: Final = 1000

# Most planned steps one `sent` event carries (a plan of a huge group stops there).
MAX_PLAN_STEPS: Final = 1000

PlanCondition = Literal["success", "failure", "chord"]


class PlanStep(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One step of the workflow a task's message already holds, not sent yet (DESIGN.md §2, `plan`).

    It runs after the tasks in `after`: on their success (a chain step, a link callback), on their
    failure (a link_error errback), or once all of them finished (`chord`: a chord callback after its
    header members). The lineage fields are the ones its own `sent` event will carry.
    """

    task_id: str
    name: str | None = None
    after: list[str] = msgspec.field(default_factory=list)
    on: PlanCondition = "success"
    parent_id: str | None = None
    group_id: str | None = None
    chord_id: str | None = None
    links: list[str] | None = None
    link_errors: list[str] | None = None


class ScheduleInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of a beat schedule as the beat process announces it (on its worker events)."""

    name: str
    task: str
    # The schedule in words, e.g. `every 2s`, `crontab(0 4 * * *)`.
    schedule: str
    # Seconds between runs (for a crontab or solar schedule: between its next two runs).
    interval: float | None = None
    # When beat will send it next (epoch seconds).
    next_at: float | None = None


class ScheduleRun(msgspec.Struct, kw_only=True, omit_defaults=True):
    """On a `sent` from beat: the entry it ran, when that run was due, when the next one is due, and the
    runs that came due between and were never sent (beat was down)."""

    entry: str
    due: float | None = None
    next_at: float | None = None
    missed: int = 0


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One lifecycle step of a task or worker. Field meanings: DESIGN.md §2."""

    v: int
    id: str
    type: EventType
    ts: float

    # Task identity and lineage.
    task_id: str | None = None
    name: str | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    # For a chord header member: the task id of the chord callback, known at publish time.
    chord_id: str | None = None
    # Task ids triggered on success (chain successor, link callbacks) and on failure (link_error).
    links: list[str] | None = None
    link_errors: list[str] | None = None
    trace_id: str | None = None
    # On `sent`: the steps of the workflow after this task that its message already holds (at most
    # MAX_PLAN_STEPS), so the graph draws them before they are sent.
    plan: list[PlanStep] | None = None

    # Where it ran or was routed.
    hostname: str | None = None
    pid: int | None = None
    queue: str | None = None

    retries: int | None = None
    eta: float | None = None
    expires: float | None = None

    # Scrubbed, size-capped, JSON-safe values.
    args: Any = None
    kwargs: Any = None
    result: Any = None
    exception: str | None = None
    traceback: str | None = None
    # Why: for `retried` (the exception that caused the retry), `revoked` (terminated/expired) and
    # `rejected` (requeue or not).
    reason: str | None = None
    runtime: float | None = None

    # Worker events: registered tasks (on online), pool facts, and seconds between its heartbeats (on
    # online and heartbeat; workers before it sent none).
    tasks: list[TaskInfo] | None = None
    info: dict[str, Any] | None = None
    heartbeat_interval: float | None = None

    # publisher.dropped: events dropped by this process since its last report.
    dropped: int | None = None

    # Beat (periodic tasks): on a `sent` from beat, the entry it ran; on the beat process's worker
    # events, its whole schedule (at most MAX_SCHEDULES entries).
    schedule: ScheduleRun | None = None
    schedules: list[ScheduleInfo] | None = None


_encoder = msgspec.json.Encoder()
_randbytes = random.randbytes
_split_ids = re.compile(".{32}").findall  # 32 hex digits each, one C loop per batch
_decoder = msgspec.json.Decoder(Event)


def new_event_id() -> str:
    """A unique event id; the consumer ignores ids it has already stored."""
    return uuid.uuid4().hex


def make_event(type_: EventType, **fields: Any) -> Event:
    """Build an event stamped with a fresh id and the current wall-clock time."""
    return Event(v=SCHEMA_VERSION, id=new_event_id(), type=type_, ts=time.time(), **fields)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


class _Head(msgspec.Struct):
    """The members every event has, encoded ahead of a recorded event's fields (encode_records)."""

    v: int
    id: str
    type: str
    ts: float


# Every event field but the head's, all optional: encoding one leaves the None ones out (as `encode()`
# does), and building one refuses a key that is not an event field (TypeError), as Event() does, for
# less than filtering a dict in Python would cost.
_Body = msgspec.defstruct(
    "_Body",
    [(name, Any, None) for name in Event.__struct_fields__ if name not in _Head.__struct_fields__],
    kw_only=True,
    omit_defaults=True,
)

# An event recorded by the tracking library's hooks: (type, time, fields, extra fields or None).
Record: TypeAlias = "tuple[EventType, float, dict[str, Any], dict[str, Any] | None]"


def _members(fields: dict[str, Any]) -> bytes:
    """`fields` as the members of a JSON object without its opening brace: `"k":v,...}`, or `}`."""
    return _encoder.encode(_Body(**fields))[1:]


def encode_records(
    records: Sequence[Record | Event], on_error: Callable[[str, Exception], None]
) -> list[bytes]:
    """Encode a batch: each record as the JSON of `Event(v, id, type, ts, **fields, **extra)` with a fresh
    random id, each built Event as `encode()` does. A record that cannot be encoded (a key that is no
    event field or is given twice, a value msgspec cannot encode) is passed to `on_error` with its type
    and left out; the rest of the batch goes on.

    Why not build the Events: the events of one task share one fields dict, encoded here once per batch,
    and building a 30-field Struct from keywords costs more than encoding it. Ids: random 128-bit numbers
    from the process's Mersenne Twister (reseeded in forked children), drawn for the whole batch; uuid4
    would cost a system call each.
    """
    ids = _split_ids(_randbytes(16 * len(records)).hex())
    bodies: dict[int, bytes] = {}  # id(fields) -> its members; `records` keeps every fields dict alive
    out: list[bytes] = []
    append = out.append
    for record, event_id in zip(records, ids, strict=True):
        try:
            if type(record) is not tuple:
                append(_encoder.encode(record))
                continue
            type_, ts, fields, extra = record
            body = bodies.get(id(fields))
            if body is None:
                body = bodies[id(fields)] = _members(fields)
            head = _encoder.encode(_Head(SCHEMA_VERSION, event_id, type_, ts))[:-1]
            if extra:
                if not fields.keys().isdisjoint(extra):  # iterates `extra`, the short one
                    raise TypeError(f"fields given twice: {sorted(extra.keys() & fields.keys())}")
                more = _members(extra)
                if len(more) > 1:
                    head = b"".join((head, b",", more[:-1]))
            append(head + b"," + body if len(body) > 1 else head + b"}")
        except Exception as exc:
            on_error(record.type if isinstance(record, Event) else record[0], exc)
    return out


class EventRejected(ValueError):
    """A stream entry that is not a valid v1 event. `kind` is a short, stable label for metrics."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def decode(data: bytes | bytearray | memoryview | str) -> Event:
    """Parse and validate one encoded event, or raise EventRejected naming what was wrong."""
    if len(data) > MAX_EVENT_BYTES:
        raise EventRejected("oversize", f"{len(data)} bytes > {MAX_EVENT_BYTES}")
    if isinstance(data, str):
        raw: bytes | bytearray | memoryview = data.encode("utf-8", "surrogatepass")
    else:
        raw = data
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        kind = "missing_field" if "missing required field" in message.lower() else "invalid_field"
        raise EventRejected(kind, message) from None
    except msgspec.DecodeError as exc:
        kind = "not_utf8" if _is_not_utf8(raw) else "not_json"
        raise EventRejected(kind, str(exc)) from None
    except UnicodeDecodeError as exc:  # msgspec raises this for invalid UTF-8 inside a string
        raise EventRejected("not_utf8", str(exc)) from None
    if event.v != SCHEMA_VERSION:
        raise EventRejected("unsupported_version", f"v={event.v}")
    if event.type in TASK_EVENT_TYPES and not event.task_id:
        raise EventRejected("missing_field", f"{event.type} event without task_id")
    if b"\\u0000" in (raw if isinstance(raw, bytes) else bytes(raw)):
        _strip_nul(event)
    # Indexed columns: PostgreSQL refuses index rows over ~2.7 KB, which would fail the whole batch on
    # every retry. An event or task id that long cannot be real; other texts are clipped (the same way
    # on every event, so they still group), to the lengths the API accepts as filters.
    for name in ("id", "task_id"):
        value = getattr(event, name)
        if value is not None and len(value) > _ID_MAX:
            raise EventRejected("invalid_field", f"`{name}` longer than {_ID_MAX} characters ({len(value)})")
    for name, limit in _TEXT_LIMITS:
        value = getattr(event, name)
        if value is not None and len(value) > limit:
            setattr(event, name, value[:limit])
    for name in ("links", "link_errors"):
        values = getattr(event, name)
        if values and any(len(v) > _ID_MAX for v in values):
            setattr(event, name, [v[:_ID_MAX] for v in values])
    if event.schedule is not None or event.schedules is not None:
        _clip_schedules(event)
    for name in _INT_FIELDS:
        # JSON integers are unbounded; SQL columns are 64-bit. Out of range here would fail the whole
        # batch's commit in the store on every retry (a poison message), so it is a bad field instead.
        value = getattr(event, name)
        if value is not None and not _INT_MIN <= value <= _INT_MAX:
            raise EventRejected("invalid_field", f"`{name}` out of range: {value}")
    return event


_ID_MAX: Final = 255
_ID_FIELDS: Final = ("root_id", "parent_id", "group_id", "chord_id", "trace_id")
_TEXT_LIMITS: Final = (
    *((name, _ID_MAX) for name in _ID_FIELDS),
    ("name", 512),
    ("hostname", 512),
    ("queue", 512),
)
_INT_FIELDS: Final = ("retries", "pid", "dropped")
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**63 - 1
_TEXT_FIELDS: Final = ("id", "task_id", "name", "root_id", "parent_id", "group_id", "chord_id", "trace_id",
                       "hostname", "queue", "exception", "traceback", "reason")  # fmt: skip


def _clip_schedules(event: Event) -> None:
    """Beat's entry names, task names and schedule texts clipped and freed of NULs like other texts (the
    entry name is a key of the store); a schedule over MAX_SCHEDULES entries keeps its first ones."""

    def text(value: str) -> str:
        return value[:512].replace("\x00", "\ufffd")

    run = event.schedule
    if run is not None:
        run.entry = text(run.entry)
        run.missed = min(max(run.missed, 0), _INT_MAX)
    if event.schedules is not None:
        event.schedules = event.schedules[:MAX_SCHEDULES]
        for info in event.schedules:
            info.name, info.task, info.schedule = text(info.name), text(info.task), text(info.schedule)


def _strip_nul(event: Event) -> None:
    """NUL characters become U+FFFD: PostgreSQL text cannot hold them, and one such event would fail its
    whole batch on every retry. Replacing (not rejecting) keeps e.g. a `failed` event whose message held
    binary junk; ids stay consistent because every event of a task is treated the same way."""
    for name in _TEXT_FIELDS:
        value = getattr(event, name)
        if value is not None and "\x00" in value:
            setattr(event, name, value.replace("\x00", "\ufffd"))
    for name in ("links", "link_errors"):
        values = getattr(event, name)
        if values:
            setattr(event, name, [v.replace("\x00", "\ufffd") for v in values])
    for info in event.tasks or ():
        for name in ("name", "signature", "doc"):
            value = getattr(info, name)
            if value is not None and "\x00" in value:
                setattr(info, name, value.replace("\x00", "\ufffd"))


def _is_not_utf8(raw: bytes | bytearray | memoryview) -> bool:
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def process_identity() -> tuple[str, int]:
    """(hostname, pid) of the current process, for events emitted outside a worker."""
    return (os.uname().nodename, os.getpid())
