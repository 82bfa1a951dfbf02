"""The domain model the server answers with: tasks, flows, graphs, workers, registry.

Plain dataclasses, so the pure `flow` code, the store and the HTTP layer share one definition and
FastAPI can derive the OpenAPI schema (and the UI its TypeScript types) from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

from typing_extensions import TypeAliasType

# Named aliases become named enums in the OpenAPI schema (`components.schemas.TaskState`, ...), so the
# UI's generated types carry the states and which of them are terminal, in this order.
# PLANNED: a step of the workflow known from an earlier task's message, not sent yet. NOT_RUN: a planned
# step that can no longer run (an upstream step failed). LOST: received or started on a worker that went
# away without a final event; nothing more is expected of it, though a later real event still wins.
UnfinishedState = TypeAliasType(
    "UnfinishedState", Literal["PLANNED", "PENDING", "RECEIVED", "STARTED", "RETRY"]
)
TerminalState = TypeAliasType(
    "TerminalState", Literal["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "NOT_RUN", "LOST"]
)
TaskState = TypeAliasType("TaskState", UnfinishedState | TerminalState)
TERMINAL_STATES: frozenset[str] = frozenset(get_args(TerminalState.__value__))
# States in which a task will never do (more) work: what stops the steps planned after it.
FAILED_STATES: frozenset[str] = frozenset({"FAILURE", "REVOKED", "REJECTED", "LOST"})
FlowState = TypeAliasType(
    "FlowState", Literal["PENDING", "RUNNING", "SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST"]
)
EdgeKind = Literal["spawn", "chain", "chord", "errback"]
SegmentKind = Literal["queued", "received", "running", "retry"]

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass
class Segment:
    """One stretch of a task's life, for the timeline: end is None while it is still going on."""

    kind: SegmentKind
    start: float
    end: float | None = None


@dataclass
class EventRecord:
    """One stored lifecycle event of a task, in the order it happened."""

    id: str
    type: str
    ts: float
    hostname: str | None = None
    pid: int | None = None
    retries: int | None = None
    exception: str | None = None
    traceback: str | None = None
    reason: str | None = None
    runtime: float | None = None
    # Of a `failed` or `retried` event: the failure cluster of its cause (flow/fingerprint.py).
    fingerprint: str | None = None


@dataclass
class TaskSummary:
    """A task as it appears in lists and graph nodes."""

    task_id: str
    name: str | None
    state: TaskState
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    chord_id: str | None = None
    trace_id: str | None = None
    hostname: str | None = None
    queue: str | None = None
    retries: int = 0
    sent_at: float | None = None
    received_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    runtime: float | None = None
    # Seconds from being queued (or due, for an ETA) to starting; see flow/fold.py `queue_wait`.
    queue_wait: float | None = None
    exception: str | None = None
    links: list[str] = field(default_factory=list)
    link_errors: list[str] = field(default_factory=list)
    # Seconds spent in each state (PENDING, RECEIVED, STARTED, RETRY), for badges and the timeline.
    durations: dict[str, float] = field(default_factory=dict)
    updated_at: float | None = None
    # Why a task is NOT_RUN or LOST, in words ("upstream <task id> failed").
    reason: str | None = None
    # The failure cluster of the task's latest failure or retry (flow/fingerprint.py): a FAILURE's own,
    # else its latest retry's, whatever its state now; None for a task that never failed or retried.
    fingerprint: str | None = None
    # Running far longer than its name's history says it should (computed when read).
    stuck: bool = False


@dataclass
class TaskDetail(TaskSummary):
    """Everything known about one task."""

    args: Any = None
    kwargs: Any = None
    result: Any = None
    traceback: str | None = None
    eta: float | None = None
    expires: float | None = None
    pid: int | None = None
    events: list[EventRecord] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    # Failed tasks in the cluster of `fingerprint`, this one included when it failed (`GET /api/failures`).
    cluster_size: int | None = None


@dataclass
class Sparkline:
    """Counts over a window in equal buckets: bucket i covers [start + i * step, start + (i + 1) * step)."""

    start: float
    step: float
    counts: list[int]


@dataclass
class FailureCluster:
    """Failures and retries with one cause (flow/fingerprint.py), counted over the requested window."""

    fingerprint: str
    exception_type: str
    # The title: the first message seen, numbers, ids and quoted values replaced by placeholders.
    message: str
    # Failed tasks (state FAILURE) whose failure had this cause.
    count: int
    # Retry attempts with this cause (of tasks that failed, succeeded later, or still run).
    retries: int
    first_seen: float
    last_seen: float
    task_names: list[str]
    # Tasks whose latest failure or retry had this cause, newest first.
    sample_task_ids: list[str]
    # Failures per bucket over the window.
    sparkline: Sparkline


@dataclass
class FlowSummary:
    """One root workflow: the root task and how its descendants are doing."""

    root_id: str
    root_name: str | None
    state: FlowState
    counts: dict[str, int]
    task_count: int
    started_at: float | None
    finished_at: float | None
    duration: float | None
    trace_id: str | None = None
    updated_at: float | None = None


@dataclass
class GraphNode(TaskSummary):
    segments: list[Segment] = field(default_factory=list)


@dataclass
class GraphEdge:
    source: str
    target: str
    kind: EdgeKind
    # Edges it stands for: more than 1 where one end is a collapsed group (`CollapsedGroup.node_id`).
    count: int = 1


@dataclass
class GraphGroup:
    """A group or chord container: its header members and, for a chord, the callback task."""

    id: str
    kind: Literal["group", "chord"]
    members: list[str]
    callback_id: str | None = None


@dataclass
class Percentiles:
    """Nearest-rank percentiles of one duration over a group's members that have it (seconds)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


@dataclass
class CollapsedGroup:
    """A group or chord header with more members than the graph's `collapse`: counted, not sent.

    `listed` are the members worth seeing that are sent as nodes anyway (failed, lost, retried, running,
    then the slowest few and the last to finish), `unlisted` how many more failed, lost, retried or
    running ones there are (page them: `GET /api/flows/{root_id}/groups/{id}/members?state=`).
    """

    id: str
    # The id edges to or from the members not listed use.
    node_id: str
    kind: Literal["group", "chord"]
    name: str | None
    total: int
    counts: dict[str, int]
    # Members retried at least once, whatever their state now.
    retried: int
    runtime: Percentiles
    queue_wait: Percentiles
    first_seen: float | None
    last_finished: float | None
    listed: list[str]
    unlisted: int = 0
    callback_id: str | None = None


@dataclass
class FlowGraph:
    root_id: str
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    groups: list[GraphGroup]
    # The flow's row as `GET /api/flows` lists it: state, counts, start, duration (flow/flows.py).
    summary: FlowSummary
    # Task ids, root first, of the chain of tasks that decided when the flow finished.
    critical_path: list[str] = field(default_factory=list)
    # Groups sent summarised instead of member by member; each one's `groups` entry lists only `listed`.
    collapsed: list[CollapsedGroup] = field(default_factory=list)


@dataclass
class MemberPage:
    """One page of a group's members; pass `next_cursor` back as `cursor` (null: no more)."""

    items: list[GraphNode]
    next_cursor: str | None = None


@dataclass
class TraceSummary:
    """The flows of one trace taken together, by the same rule as one flow (flow/flows.py)."""

    state: FlowState
    counts: dict[str, int]
    task_count: int
    started_at: float | None
    finished_at: float | None
    duration: float | None


@dataclass
class TraceView:
    trace_id: str
    flows: list[FlowSummary]
    tasks: list[TaskSummary]
    # Computed by the API from `flows`; a store leaves it unset.
    summary: TraceSummary | None = None


@dataclass
class RegisteredTask:
    """A task name with what workers announced about it and how its runs went."""

    name: str
    counts: dict[str, int]
    total: int
    failure_rate: float
    p50: float | None
    p95: float | None
    signature: str | None = None
    doc: str | None = None
    workers: list[str] = field(default_factory=list)


@dataclass
class WorkerInfo:
    hostname: str
    status: Literal["online", "offline"]
    last_heartbeat: float | None
    # Seconds between its heartbeats: its own, or the server's default when it announces none.
    heartbeat_interval: float | None = None
    online_since: float | None = None
    pid: int | None = None
    tasks_run: int = 0
    registered: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    # From the worker's worker.online `info` (tracking/worker.py): pool kind, processes/threads, queues.
    pool: str | None = None
    concurrency: int | None = None
    queues: list[str] = field(default_factory=list)
    # Tasks STARTED there now.
    running: int = 0
    # Tasks that failed there (FAILURE), of those stored.
    failed: int = 0
    # When it said it left (worker.offline); offline workers are kept.
    offline_at: float | None = None


# -- overview and trends (store/stats.py) ------------------------------------------------------------

StatMetric = TypeAliasType("StatMetric", Literal["runtime", "queue_wait"])


@dataclass
class Heatmap:
    """Tasks per time bucket (rows) and duration bucket (columns): counts[i][j] tasks in
    [time_edges[i], time_edges[i + 1]) whose duration was in (value_edges[j], value_edges[j + 1]] seconds
    (the first column also holds shorter ones, the last longer ones)."""

    name: str | None
    metric: StatMetric
    time_edges: list[float]
    value_edges: list[float]
    counts: list[list[int]]


@dataclass
class Regression:
    """A name whose runtime p95 over the second half of the window is at least 1.5 x the first half's."""

    name: str
    p95_before: float
    p95_after: float
    runs_before: int
    runs_after: int
    ratio: float


@dataclass
class NameTrend:
    """One task name per time bucket: runs finished, failed, runtime p50/p95 (None: no runs)."""

    name: str
    time_edges: list[float]
    runs: list[int]
    failures: list[int]
    p50: list[float | None]
    p95: list[float | None]
    regression: Regression | None


@dataclass
class Backlog:
    """Tasks sent to a queue and not received by any worker yet (state PENDING)."""

    queue: str
    waiting: int


@dataclass
class SlowName:
    name: str
    runs: int
    p50: float | None
    p95: float | None


@dataclass
class Overview:
    """The landing page's figures over [since, until); see docs/insights.md "Overview and trends"."""

    since: float
    until: float
    time_edges: list[float]
    # Tasks finished per time bucket by final state (SUCCESS, FAILURE, REVOKED, REJECTED, LOST).
    throughput: dict[str, list[int]]
    finished: int
    failed: int
    failure_rate: float | None
    # Per time bucket: failed (FAILURE) over finished; None where none finished.
    failure_rates: list[float | None]
    backlog: list[Backlog]
    workers_online: int
    workers_offline: int
    lost: int
    stuck: int
    top_failures: list[FailureCluster]
    slowest: list[SlowName]
    regressions: list[Regression]
    # Beat schedule entries, those late now, runs missed, and whether beat is down (store/schedules.py).
    schedules: int = 0
    schedules_late: int = 0
    schedules_missed: int = 0
    beat_down: bool = False
