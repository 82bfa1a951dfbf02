"""The REST router: DESIGN.md §5, answering with the flow/model.py dataclasses.

Endpoints are plain `def`s, so FastAPI runs the blocking store calls in its threadpool and the event
loop (WebSocket pushes) never waits on SQLite or PostgreSQL. User input never produces a 500: FastAPI
validates query values (422), unknown ids give 404 with a JSON `detail`, a malformed cursor 422, and a
store that is down 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, NoReturn, TypeVar

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from fastapi.exceptions import RequestValidationError

from celery_flow.flow.flows import summarize_trace
from celery_flow.flow.graph import collapsed_graph
from celery_flow.flow.model import (
    FailureCluster,
    FlowGraph,
    FlowState,
    FlowSummary,
    Heatmap,
    MemberPage,
    NameTrend,
    Overview,
    RegisteredTask,
    StatMetric,
    TaskDetail,
    TaskState,
    TaskSummary,
    TraceView,
    WorkerInfo,
)
from celery_flow.server.health import HealthMonitor, HealthReport
from celery_flow.store import members
from celery_flow.store.base import Store, StoreError, TaskFilter
from celery_flow.store.schedules import Schedules

R = TypeVar("R")
log = logging.getLogger("celery_flow.server")

MAX_LIMIT = 500
_encoder = msgspec.json.Encoder()
IdPath = Annotated[str, Path(min_length=1, max_length=255)]
Name = Annotated[str | None, Query(max_length=512, description="Exact task name")]
Id = Annotated[str | None, Query(max_length=255)]
Worker = Annotated[str | None, Query(max_length=512, description="Worker hostname, e.g. celery@host")]
Text = Annotated[
    str | None,
    Query(
        max_length=512,
        description="Free text: a task id prefix, part of a task name, or words and `key:value` pairs "
        "inside arguments, results and error messages, all of which must match (`ada@example.com`, "
        '`customer_id:4711`, `city:"New York"`); flows match when one of their tasks does',
    ),
]
Since = Annotated[float | None, Query(ge=0, description="Epoch seconds: sent or started at/after")]
Until = Annotated[float | None, Query(ge=0, description="Epoch seconds: sent or started before")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Fingerprint = Annotated[
    str | None, Query(max_length=64, description="A failure cluster's `fingerprint` (`GET /api/failures`)")
]
Stuck = Annotated[
    bool,
    Query(
        description="Only tasks running far longer than their name's history (5 x its p99) or --stuck-after"
    ),
]
StatSince = Annotated[
    float | None, Query(ge=0, description="Epoch seconds: window start (default: `until` - 24 hours)")
]
StatUntil = Annotated[float | None, Query(ge=0, description="Epoch seconds: window end (default: now)")]
Queue = Annotated[
    str | None,
    Query(max_length=512, description="The queue a task was sent to (with `state=PENDING`: its backlog)"),
]
Cursor = Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page")]
Collapse = Annotated[
    int,
    Query(
        ge=0,
        le=1_000_000,
        description="Groups with more members than this come collapsed (`collapsed`); 0 collapses every "
        "group",
    ),
]


@dataclass
class TaskPage:
    """One page of tasks; pass `next_cursor` back as `cursor` for the next page (null: no more)."""

    items: list[TaskSummary]
    next_cursor: str | None = None


@dataclass
class FlowPage:
    """One page of root workflows; pass `next_cursor` back as `cursor` for the next page."""

    items: list[FlowSummary]
    next_cursor: str | None = None


@dataclass
class FailureList:
    """Failure clusters, most failed tasks first."""

    items: list[FailureCluster]


@dataclass
class ErrorBody:
    detail: str


ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorBody, "description": "No such id"},
    503: {"model": ErrorBody, "description": "The store is unreachable"},
}


def _not_found(what: str, ident: str) -> NoReturn:
    raise HTTPException(status_code=404, detail=f"no {what} with id {ident!r}")


def _invalid(param: str, message: str, value: object) -> NoReturn:
    """A 422 shaped like FastAPI's own validation errors, so it matches the documented 422 schema."""
    raise RequestValidationError(
        [{"type": "value_error", "loc": ("query", param), "msg": message, "input": value}]
    )


def _json(value: object) -> Response:
    """A model encoded by msgspec: the graph and member pages are the API's biggest answers, and
    FastAPI's own validation of them would cost more than reading them from the store."""
    return Response(content=_encoder.encode(value), media_type="application/json")


def guarded(call: Callable[[], R], cursor: str | None = None) -> R:
    """Run one store call, turning store outages into 503 and bad cursors into 422 (never a 500)."""
    try:
        return call()
    except StoreError as exc:
        raise HTTPException(status_code=503, detail=f"store unavailable: {exc}") from None
    except ValueError as exc:
        _invalid("cursor", f"invalid request: {exc}", cursor)


@dataclass(frozen=True)
class Listing:
    """The query of a task or flow list, but its `state` (whose values differ between the two)."""

    filter: TaskFilter
    limit: int
    cursor: str | None


def listing(
    name: Name = None,
    root_id: Id = None,
    trace_id: Id = None,
    worker: Worker = None,
    q: Text = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Listing:
    _check_window(since, until)
    filt = TaskFilter(
        name=name, root_id=root_id, trace_id=trace_id, worker=worker, q=q, since=since, until=until
    )
    return Listing(filt, limit, cursor)


def _check_window(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and until < since:
        _invalid("until", "`until` must not be before `since`", until)


# A list endpoint's own parameters (`state`) come first in its OpenAPI query, then these, in this order.
ListQuery = Annotated[Listing, Depends(listing)]


def build_api_router(
    store: Callable[[], Store],
    health: Callable[[], HealthMonitor],
    build_graph: Callable[[str, list[TaskDetail]], FlowGraph],
) -> APIRouter:
    """The `/api/*` REST routes, reading the store through the given accessor (set at startup)."""
    router = APIRouter(prefix="/api", responses=ERRORS)

    @router.get("/health", response_model=HealthReport, summary="Broker, store and consumer health")
    def get_health() -> HealthReport:
        return health().report()

    @router.get("/tasks", response_model=TaskPage, summary="Tasks, newest first")
    def list_tasks(
        query: ListQuery,
        state: Annotated[TaskState | None, Query()] = None,
        fingerprint: Fingerprint = None,
        stuck: Stuck = False,
        queue: Queue = None,
    ) -> TaskPage:
        filt = replace(query.filter, state=state, fingerprint=fingerprint, stuck=stuck, queue=queue)
        page = guarded(lambda: store().list_tasks(filt, query.limit, query.cursor), query.cursor)
        return TaskPage(items=page.items, next_cursor=page.next_cursor)

    @router.get("/tasks/{task_id}", response_model=TaskDetail, summary="Everything known about one task")
    def get_task(task_id: IdPath) -> TaskDetail:
        task = guarded(lambda: store().get_task(task_id))
        if task is None:
            _not_found("task", task_id)
        return task

    @router.get("/flows", response_model=FlowPage, summary="Root workflows, newest first")
    def list_flows(query: ListQuery, state: Annotated[FlowState | None, Query()] = None) -> FlowPage:
        filt = replace(query.filter, state=state)
        page = guarded(lambda: store().list_flows(filt, query.limit, query.cursor), query.cursor)
        return FlowPage(items=page.items, next_cursor=page.next_cursor)

    @router.get(
        "/flows/{root_id}",
        response_model=FlowGraph,
        summary="The graph of one root workflow",
        description="Nodes, edges and groups, and `summary`: the flow's row exactly as `GET /api/flows` "
        "lists it (state, counts by state, start, duration). A group or chord header with more than "
        "`collapse` members comes as one entry of `collapsed` (counts by state, runtime and queue-wait "
        "percentiles, first seen and last finish) instead of a node per member: only the members worth a "
        "look are nodes (failed, lost, retried, running, the slowest few, the last to finish; at most "
        f"{members.LISTED} failed or running ones, `unlisted` counts the rest), and edges to or from the "
        "others end at the group's `node_id` with their `count`. Page through all members with `GET "
        "/api/flows/{root_id}/groups/{group_id}/members`. Counts, state, span and critical path stay exact.",
    )
    def get_flow(root_id: IdPath, collapse: Collapse = members.COLLAPSE_DEFAULT) -> Response:
        parts = guarded(lambda: store().flow_parts(root_id, collapse))
        if parts is None or not parts.tasks:
            _not_found("flow", root_id)
        if not parts.groups or parts.summary is None:
            return _json(build_graph(root_id, parts.tasks))
        return _json(
            collapsed_graph(
                root_id, parts.tasks, [g.collapsed() for g in parts.groups],
                {g.group_id: g.parents for g in parts.groups}, parts.hidden_parents, parts.summary,
            )
        )  # fmt: skip

    @router.get(
        "/flows/{root_id}/groups/{group_id}/members",
        response_model=MemberPage,
        summary="The members of one group of a flow, a page at a time",
        description="Keyset pages of a group's members (the tasks carrying its group id, less its chord's "
        "callback): `sort=newest` by when each was first seen, newest first; `sort=slowest` by runtime, "
        "slowest first, then those without a runtime yet. `state` keeps one state. Pass `next_cursor` "
        "back as `cursor` with the same `sort` and `state` (null: no more); the walk sees every member "
        "once.",
    )
    def get_group_members(
        root_id: IdPath,
        group_id: IdPath,
        state: Annotated[TaskState | None, Query()] = None,
        sort: Annotated[members.MemberSort, Query(description="Order of the walk")] = "newest",
        limit: Limit = 100,
        cursor: Cursor = None,
    ) -> Response:
        page = guarded(lambda: store().group_members(root_id, group_id, state, sort, limit, cursor), cursor)
        if page is None:
            _not_found("group", group_id)
        return _json(page)

    @router.get(
        "/traces/{trace_id}",
        response_model=TraceView,
        summary="Flows and tasks of one trace id",
        description="Each flow's row as `GET /api/flows` lists it, its tasks, and `summary`: the flows "
        "taken together, judged by the same rule as one flow.",
    )
    def get_trace(trace_id: IdPath) -> TraceView:
        view = guarded(lambda: store().trace(trace_id))
        if view is None or (not view.flows and not view.tasks):
            _not_found("trace", trace_id)
        return replace(view, summary=summarize_trace(view.flows))

    @router.get(
        "/failures",
        response_model=FailureList,
        summary="Failures grouped by cause",
        description="Failure clusters with failures or retries in [`since`, `until`) (default: everything "
        "stored, until now), most failed tasks first. A cluster is one cause: the exception type and the "
        "traceback's frames without line numbers or Celery's own frames (`fingerprint`); `message` is its "
        "title, with numbers, ids and quoted values replaced by placeholders. `count` counts failed tasks, "
        "`retries` retry attempts; `first_seen` and `last_seen` span every failure and retry stored; "
        "`sample_task_ids` are up to 10 of its tasks, newest first (all of them: `GET "
        "/api/tasks?fingerprint=`). Counts come from buckets of 1 minute, 10 minutes or 1 hour (the widest "
        "giving at least 24 over the window): `since` is rounded down and `until` up to whole buckets, and "
        "`sparkline` gives the failures per bucket over the window, at most 60 buckets.",
    )
    def get_failures(
        since: Annotated[
            float | None, Query(ge=0, description="Epoch seconds: failed or retried at/after")
        ] = None,
        until: Annotated[
            float | None, Query(ge=0, description="Epoch seconds: failed or retried before")
        ] = None,
        name: Name = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Clusters at most")] = 100,
    ) -> FailureList:
        _check_window(since, until)
        return FailureList(items=guarded(lambda: store().failures(since, until, name, limit)))

    @router.get(
        "/stats/heatmap",
        response_model=Heatmap,
        summary="Tasks by time and duration",
        description="Tasks per time bucket (rows, `time_edges`) and log-spaced duration bucket (columns, "
        "`value_edges` in seconds, 4 per decade from 1 ms to 10,000 s; only the span of columns holding "
        "tasks is sent) over [`since`, `until`) (default: the last 24 hours), for one task name or all "
        "(`name` left out). `runtime` counts a task when it finished, `queue_wait` (sent, or due for an "
        "ETA, to started) when it started. Time buckets are the stored ones (1 minute, 10 minutes or 1 "
        "hour, the widest giving at least 24 over the window), at most 60 rows.",
    )
    def get_heatmap(
        since: StatSince = None,
        until: StatUntil = None,
        name: Name = None,
        metric: Annotated[StatMetric, Query(description="Which duration")] = "runtime",
    ) -> Heatmap:
        _check_window(since, until)
        return guarded(lambda: store().heatmap(name, metric, since, until))

    @router.get(
        "/stats/names/{name:path}",
        response_model=NameTrend,
        summary="One task name over time",
        description="Per time bucket of [`since`, `until`) (default: the last 24 hours): runs finished, "
        "failed ones (FAILURE, REVOKED, REJECTED, LOST), and runtime p50/p95 (estimated from the duration "
        "histogram: the mean of the bucket the percentile falls in; null where nothing ran). "
        "`regression` is set when the runtime p95 over the window's second half is at least 1.5 x the "
        "first half's, with 20 runs or more in each half.",
    )
    def get_name_trend(
        name: Annotated[str, Path(min_length=1, max_length=512)],
        since: StatSince = None,
        until: StatUntil = None,
    ) -> NameTrend:
        _check_window(since, until)
        return guarded(lambda: store().name_trend(name, since, until))

    @router.get(
        "/stats/overview",
        response_model=Overview,
        summary="The landing page's figures",
        description="Over [`since`, `until`) (default: the last 24 hours): tasks finished per time bucket "
        "by final state, the failure rate (FAILURE, REVOKED, REJECTED, LOST over all finished), tasks "
        "LOST, the top 5 failure clusters (as `GET /api/failures`), the 5 names with the slowest runtime "
        "p95 and the names whose p95 regressed (as `GET /api/stats/names/{name}`). Now: the backlog per "
        "queue (tasks sent and not received yet: `GET /api/tasks?queue=&state=PENDING`), workers online "
        "and offline, tasks stuck (`GET /api/tasks?stuck=true`), beat schedule entries, those late, runs "
        "missed and whether beat is down (`GET /api/schedules`).",
    )
    def get_overview(since: StatSince = None, until: StatUntil = None) -> Overview:
        _check_window(since, until)
        return guarded(lambda: store().overview(since, until))

    @router.get(
        "/schedules",
        response_model=Schedules,
        summary="Periodic tasks: beat schedule entries, their runs, late and missed",
        description="Every entry of the beat schedules celery-flow heard of (a `celery beat` with "
        "`init(app)`), by name: `schedule` in words, `last_sent_at`, `expected_next_at`, `runs` and "
        "`failures` (among the runs kept), `late` (the next run is overdue by more than `grace` seconds: "
        "--schedule-grace), `missed` (runs that came due and were never sent, since the entry was first "
        "seen), `beat_up`, and `recent`: its newest runs (all of them: `GET /api/tasks?name=`). "
        "`beat_down`: entries exist and no beat that announced them is up (then every entry goes late: "
        "blame beat, not the jobs). See docs/schedules.md.",
    )
    def get_schedules(
        name: Annotated[str | None, Query(max_length=512, description="One entry, by its name")] = None,
    ) -> Schedules:
        return guarded(lambda: store().schedules(name))

    @router.get("/registry", response_model=list[RegisteredTask], summary="Every task name seen")
    def get_registry() -> list[RegisteredTask]:
        return guarded(lambda: store().registry())

    @router.get("/workers", response_model=list[WorkerInfo], summary="Workers seen, online or offline")
    def get_workers() -> list[WorkerInfo]:
        return guarded(lambda: store().workers())

    return router
