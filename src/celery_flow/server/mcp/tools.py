"""The MCP tools: each one store query the REST API makes, its answer rendered as bounded plain text.

No MCP SDK here (server/mcp/protocol.py speaks the protocol): a tool is its name, a description, a
pydantic model of its arguments and a function `(store, args) -> Text` (lines, cut to the tool's
budget when rendered). Adding one is a `Tool(...)` line in `TOOLS` and its function. Every value comes
from what the store holds, scrubbed when it was tracked; values are written as JSON text, never
evaluated, and one-line fields are escaped so that no value can start a line of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from celery_flow.flow.graph import build_graph
from celery_flow.flow.model import (
    FailureCluster,
    FlowGraph,
    TaskDetail,
    TaskState,
    TaskSummary,
)
from celery_flow.store.base import Store, TaskFilter

A = TypeVar("A", bound=BaseModel)

# One tool answer at most this long (characters): a few thousand tokens an assistant can afford.
DEFAULT_BUDGET = 24_000
# One argument, keyword argument or result at most this long; a traceback keeps its last lines.
VALUE_CHARS = 2_000
TRACEBACK_CHARS = 4_000
MAX_PAGE = 100


class ToolFailed(Exception):
    """A tool's answer to bad input or an unknown id: shown to the assistant as an error result."""


class Args(BaseModel):
    """Tool arguments: unknown ones are refused, so a misspelt filter is not silently ignored."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Tool(Generic[A]):
    """One read-only tool: `run(store, args)` returns its text, cut at `budget` characters."""

    name: str
    description: str
    args: type[A]
    run: Callable[[Store, A], Text]
    budget: int = DEFAULT_BUDGET

    def call(self, store: Store, arguments: dict[str, Any]) -> str:
        """Validate `arguments`, run the query, render its text (raises ToolFailed or StoreError)."""
        return self.run(store, self.args.model_validate(arguments)).render(self.budget)

    def input_schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()


# ---- bounded text --------------------------------------------------------------------------------


@dataclass
class Text:
    """Lines of an answer, and what to say (how to get the rest) when they do not all fit."""

    lines: list[str] = field(default_factory=list)
    more: str = "ask for less (narrower filters, a smaller limit)"

    def add(self, line: str) -> None:
        self.lines.append(line)

    def render(self, budget: int) -> str:
        """The lines that fit in `budget` characters, then a marker naming what was left out."""
        out: list[str] = []
        used = 0
        room = budget - len(self.more) - 80  # what the marker takes
        for index, line in enumerate(self.lines):
            if used + len(line) + 1 > room:
                left = len(self.lines) - index
                out.append(f"[truncated: {left} more lines not shown; to see them, {self.more}]")
                break
            out.append(line)
            used += len(line) + 1
        return "\n".join(out)


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def inline(value: object) -> str:
    """`value` on one line: line breaks (U+2028 too) and other unprintable characters escaped (`\\n`,
    `\\u2028`), so that no stored value can start a line of its own."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _ESCAPES.get(c, f"\\u{ord(c):04x}") for c in text)


def ids(values: Iterable[str]) -> str:
    return ", ".join(inline(v) for v in values)


def value_text(value: Any, limit: int = VALUE_CHARS) -> str:
    """A stored argument or result as one line of JSON, cut at `limit` characters."""
    text = inline(json.dumps(value, ensure_ascii=False, default=str, sort_keys=True))
    if len(text) > limit:
        return f"{text[:limit]}... [{len(text) - limit} more characters: the UI shows them all]"
    return text


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def task_line(task: TaskSummary) -> str:
    """One task: id, name, state, where and when it ran, and what is wrong with it."""
    parts = [inline(task.task_id), inline(task.name or "?"), task.state]
    if task.retries:
        parts.append(f"retries={task.retries}")
    if task.runtime is not None:
        parts.append(f"runtime={seconds(task.runtime)}")
    if task.hostname:
        parts.append(f"worker={inline(task.hostname)}")
    if task.queue:
        parts.append(f"queue={inline(task.queue)}")
    started = task.started_at or task.sent_at
    if started is not None:
        parts.append(f"{'started' if task.started_at else 'sent'}={when(started)}")
    if task.stuck:
        parts.append("STUCK (running far longer than usual)")
    if task.reason:
        parts.append(f"reason={inline(task.reason)}")
    if task.exception:
        parts.append(f"exception={inline(task.exception[:VALUE_CHARS])}")
    return " ".join(parts)


# ---- the tools ------------------------------------------------------------------------------------


def _limit() -> Any:
    return Field(20, ge=1, le=MAX_PAGE, description="At most this many items")


def _check_window(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and until < since:
        raise ToolFailed("`until` must not be before `since`")


class SearchArgs(Args):
    q: str | None = Field(
        None,
        max_length=512,
        description="Free text: a task id prefix, part of a task name, or words and key:value pairs inside "
        'arguments, results and error messages, all of which must match (customer_id:4711, city:"New York")',
    )
    state: TaskState | None = None
    name: str | None = Field(None, max_length=512, description="Exact task name")
    root_id: str | None = Field(None, max_length=255, description="Only the tasks of this workflow")
    trace_id: str | None = Field(None, max_length=255)
    worker: str | None = Field(None, max_length=512, description="Worker hostname, e.g. celery@host")
    queue: str | None = Field(None, max_length=512)
    fingerprint: str | None = Field(None, max_length=64, description="A failure cluster's fingerprint")
    stuck: bool = Field(False, description="Only tasks running far longer than their name's history")
    since: float | None = Field(None, ge=0, description="Epoch seconds: sent or started at/after")
    until: float | None = Field(None, ge=0, description="Epoch seconds: sent or started before")
    limit: int = _limit()
    cursor: str | None = Field(None, max_length=512, description="The cursor the previous page ended with")


def search_tasks(store: Store, args: SearchArgs) -> Text:
    _check_window(args.since, args.until)
    filt = TaskFilter(**args.model_dump(exclude={"limit", "cursor"}))
    try:
        page = store.list_tasks(filt, args.limit, args.cursor)
    except ValueError as exc:  # a malformed cursor
        raise ToolFailed(f"invalid cursor: {exc}") from None
    text = Text(more="narrow the filters or lower `limit`")
    text.add(f"{len(page.items)} tasks, newest first:" if page.items else "no task matches")
    for task in page.items:
        text.add(task_line(task))
    if page.next_cursor:
        text.add(
            "more tasks match: call search_tasks again with the same arguments and "
            f"cursor={page.next_cursor!r}"
        )
    return text


class TaskArgs(Args):
    task_id: str = Field(min_length=1, max_length=255)


def get_task(store: Store, args: TaskArgs) -> Text:
    task = store.get_task(args.task_id)
    if task is None:
        raise ToolFailed(f"no task with id {args.task_id!r} (search_tasks finds ids)")
    text = Text(more="see the task in the celery-flow UI")
    text.add(task_line(task))
    for label, value in _ids(task):
        text.add(f"{label}: {value}")
    text.add(f"sent {when(task.sent_at)}, received {when(task.received_at)}, started "
             f"{when(task.started_at)}, finished {when(task.finished_at)}; queue wait "
             f"{seconds(task.queue_wait)}")  # fmt: skip
    if task.fingerprint:
        size = f" ({task.cluster_size} failed tasks)" if task.cluster_size is not None else ""
        text.add(f"failure cluster: {task.fingerprint}{size} (list_failures; search_tasks fingerprint=...)")
    text.add(f"args: {value_text(task.args)}")
    text.add(f"kwargs: {value_text(task.kwargs)}")
    text.add(f"result: {value_text(task.result)}")
    if task.traceback:
        tail = task.traceback[-TRACEBACK_CHARS:]
        cut = " (last lines)" if len(tail) < len(task.traceback) else ""
        text.add(f"traceback{cut}:")
        text.lines += ["    " + inline(line) for line in tail.splitlines()]
    if task.children:
        text.add(f"children: {ids(task.children[:50])}" + (" ..." if len(task.children) > 50 else ""))
    text.add(f"events ({len(task.events)}):")
    for ev in task.events:
        extra = f" {inline(ev.hostname)}" if ev.hostname else ""
        extra += f" {inline(ev.exception)}" if ev.exception else ""
        extra += f" reason={inline(ev.reason)}" if ev.reason else ""
        text.add(f"  {when(ev.ts)} {ev.type}{extra}")
    return text


def _ids(task: TaskDetail) -> Iterable[tuple[str, str]]:
    for label in ("root_id", "parent_id", "group_id", "chord_id", "trace_id"):
        value = getattr(task, label)
        if value:
            yield label, inline(value)


class FlowArgs(Args):
    root_id: str = Field(min_length=1, max_length=255, description="The workflow's root task id")


def get_flow(store: Store, args: FlowArgs) -> Text:
    tasks = store.flow_tasks(args.root_id)
    if not tasks:
        raise ToolFailed(f"no flow with root id {args.root_id!r} (a task's root_id names its flow)")
    return flow_text(build_graph(args.root_id, tasks))


def flow_text(graph: FlowGraph) -> Text:
    """The graph as lines: the flow, each task, each edge, each group or chord, the critical path."""
    s = graph.summary
    counts = ", ".join(f"{state} {n}" for state, n in sorted(s.counts.items()))
    text = Text(more=f"call search_tasks with root_id={graph.root_id!r} to page through its tasks")
    text.add(f"flow {graph.root_id} {inline(s.root_name or '?')}: {s.state}, {s.task_count} tasks "
             f"({counts}), started {when(s.started_at)}, duration {seconds(s.duration)}")  # fmt: skip
    text.add("legend: PLANNED = a step known from the workflow, not sent yet; NOT_RUN = a planned step "
             "that can no longer run; LOST = its worker went away without a final event")  # fmt: skip
    text.add(f"tasks ({len(graph.nodes)}):")
    text.lines += ["- " + task_line(node) for node in graph.nodes]
    names = {node.task_id: inline(node.name or "?") for node in graph.nodes}
    text.add(f"edges ({len(graph.edges)}), source -> target (kind):")
    text.lines += [
        f"- {inline(e.source)} {names.get(e.source, '?')} -> {inline(e.target)} {names.get(e.target, '?')} "
        f"({e.kind})"
        for e in graph.edges
    ]
    if graph.groups:
        text.add(f"groups ({len(graph.groups)}):")
        for g in graph.groups:
            callback = f" -> callback {inline(g.callback_id)}" if g.callback_id else ""
            text.add(f"- {g.kind} {inline(g.id)}: members {ids(g.members)}{callback}")
    if graph.critical_path:
        text.add(
            "critical path (what decided when the flow finished): "
            + " -> ".join(map(inline, graph.critical_path))
        )
    return text


class FailuresArgs(Args):
    since: float | None = Field(None, ge=0, description="Epoch seconds: failed or retried at/after")
    until: float | None = Field(None, ge=0, description="Epoch seconds: failed or retried before")
    name: str | None = Field(None, max_length=512, description="Only this task name's failures")
    limit: int = _limit()


def list_failures(store: Store, args: FailuresArgs) -> Text:
    _check_window(args.since, args.until)
    clusters = store.failures(args.since, args.until, args.name, args.limit)
    text = Text(more="lower `limit` or pass a task `name`")
    if not clusters:
        text.add("no failure or retry in this window")
    else:
        text.add(f"{len(clusters)} failure clusters (one cause each), most failed tasks first; "
                 "search_tasks fingerprint=<fingerprint> lists a cluster's tasks:")  # fmt: skip
    for cluster in clusters:
        text.add(cluster_line(cluster))
    return text


def cluster_line(c: FailureCluster) -> str:
    names = ", ".join(inline(n) for n in c.task_names[:10])
    return (f"- {c.fingerprint} {inline(c.exception_type)}: {inline(c.message[:VALUE_CHARS])} | "
            f"{c.count} failed, {c.retries} retries, first {when(c.first_seen)}, last {when(c.last_seen)} | "
            f"tasks: {names} | latest: {ids(c.sample_task_ids[:5])}")  # fmt: skip


class OverviewArgs(Args):
    since: float | None = Field(None, ge=0, description="Epoch seconds: window start (default: 24 h ago)")
    until: float | None = Field(None, ge=0, description="Epoch seconds: window end (default: now)")


def overview(store: Store, args: OverviewArgs) -> Text:
    _check_window(args.since, args.until)
    o = store.overview(args.since, args.until)
    text = Text()
    rate = "-" if o.failure_rate is None else f"{o.failure_rate:.1%}"
    by_state = ", ".join(
        f"{state} {sum(counts)}" for state, counts in sorted(o.throughput.items()) if sum(counts)
    )
    text.add(f"from {when(o.since)} to {when(o.until)}: {o.finished} tasks finished ({by_state or 'none'}), "
             f"{o.failed} failed, failure rate {rate}, {o.lost} lost")  # fmt: skip
    text.add(f"now: {o.workers_online} workers online, {o.workers_offline} offline, {o.stuck} tasks stuck")
    text.add("backlog (sent, not received yet): "
             + (", ".join(f"{inline(b.queue)} {b.waiting}" for b in o.backlog) or "none"))  # fmt: skip
    text.add("top failure clusters:" if o.top_failures else "top failure clusters: none")
    text.lines += [cluster_line(c) for c in o.top_failures]
    text.add("slowest names (runtime p95):" if o.slowest else "slowest names: none")
    text.lines += [
        f"- {inline(s.name)}: p95 {seconds(s.p95)}, p50 {seconds(s.p50)}, {s.runs} runs" for s in o.slowest
    ]
    if o.regressions:
        text.add("regressions (runtime p95, first half of the window -> second half):")
        text.lines += [f"- {inline(r.name)}: {seconds(r.p95_before)} -> {seconds(r.p95_after)} "
                       f"(x{r.ratio:.1f})" for r in o.regressions]  # fmt: skip
    return text


class SchedulesArgs(Args):
    name: str | None = Field(None, max_length=512, description="Only this beat schedule entry")


def list_schedules(store: Store, args: SchedulesArgs) -> Text:
    s = store.schedules(args.name)
    text = Text(more="pass an entry `name`")
    if not s.items:
        text.add("no beat schedule entry known (is celery_flow.init(app) called in the beat process?)")
        return text
    beats = ", ".join(f"{inline(b.hostname)} {'up' if b.up else 'DOWN'}" for b in s.beats) or "none"
    down = "; BEAT IS DOWN: every entry is late because of it" if s.beat_down else ""
    text.add(f"{len(s.items)} entries, {s.late} late, {s.missed} runs missed "
             f"(grace {seconds(s.grace)}); beats: {beats}{down}")  # fmt: skip
    for e in s.items:
        status = f"LATE by {seconds(e.overdue)}" if e.late else "on time"
        runs = ", ".join(
            f"{inline(r.task_id)} {r.state or '?'}{' sent-late' if r.late else ''}"
            + (f" after {r.missed_before} missed" if r.missed_before else "")
            for r in e.recent[:5]
        )
        text.add(f"- {inline(e.name)}: task {inline(e.task)} {inline(e.schedule)} | {status}, "
                 f"last sent {when(e.last_sent_at)}, next expected {when(e.expected_next_at)} | "
                 f"{e.runs} runs, {e.failures} failed, {e.missed} missed | "
                 f"latest: {runs or 'none'}")  # fmt: skip
    return text


# ---- the registry ---------------------------------------------------------------------------------

TOOLS: list[Tool[Any]] = [
    Tool("search_tasks", "Find Celery tasks, newest first: by free text `q` (matches ids, names, argument, "
         "result and error text), state, name, workflow, worker, queue, failure cluster, time window.",
         SearchArgs, search_tasks),
    Tool("get_task", "Everything known about one task: arguments, result, exception, traceback, events.",
         TaskArgs, get_task),
    Tool("get_flow", "A workflow (chain, group, chord...) as text: every task with its state and runtime, "
         "the edges between them, groups and chords, steps that never ran and why.", FlowArgs, get_flow),
    Tool("list_failures", "Failures grouped by cause (exception type and code path), most failed first.",
         FailuresArgs, list_failures),
    Tool("overview", "The state of the Celery system: throughput, failure rate, backlog per queue, "
         "workers, lost and stuck tasks, top failure causes, slowest task names, regressions.",
         OverviewArgs, overview),
    Tool("list_schedules", "Periodic (celery beat) entries: last run, next expected, late, missed runs, "
         "whether beat itself is down, the latest runs with their states.", SchedulesArgs, list_schedules),
]  # fmt: skip
