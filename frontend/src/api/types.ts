// The JSON shapes of the API, generated from the server's OpenAPI schema (schema.ts, `npm run
// gen-types`): the names here are what the views use, so a model change breaks the build, not the page.
import type { components } from "./schema";
import { flowStateValues, terminalStateValues, unfinishedStateValues } from "./schema";

type S = components["schemas"];

export type TaskSummary = S["TaskSummary"];
export type TaskDetail = S["TaskDetail"];
export type TaskState = S["TaskState"];
export type TerminalState = S["TerminalState"];
export type EventRecord = S["EventRecord"];
export type Segment = S["Segment"];
export type SegmentKind = Segment["kind"];
export type FlowSummary = S["FlowSummary"];
export type FlowState = S["FlowState"];
export type GraphNode = S["GraphNode"];
export type GraphEdge = S["GraphEdge"];
export type EdgeKind = GraphEdge["kind"];
export type GraphGroup = S["GraphGroup"];
export type FlowGraph = S["FlowGraph"];
export type CollapsedGroup = S["CollapsedGroup"];
export type MemberPage = S["MemberPage"];
/** What the graph view draws: a flow's graph, or the graphs of a trace's flows put together. */
export type GraphShape = Omit<FlowGraph, "summary">;
export type TraceView = S["TraceView"];
export type TraceSummary = S["TraceSummary"];
/** The state, counts and times the server gives a flow (its list row) or a whole trace. */
export type StateSummary = Pick<
  FlowSummary,
  "state" | "counts" | "task_count" | "started_at" | "finished_at" | "duration"
>;
export type RegisteredTask = S["RegisteredTask"];
export type WorkerInfo = S["WorkerInfo"];
export type Health = S["HealthReport"];
export type TaskPage = S["TaskPage"];
export type FlowPage = S["FlowPage"];

export type FailureCluster = S["FailureCluster"];
export type FailureList = S["FailureList"];

/** Periodic tasks (GET /api/schedules). */
export type Schedules = S["Schedules"];
export type ScheduleView = S["ScheduleView"];
export type ScheduleRunView = S["ScheduleRunView"];

/** Overview and trends (GET /api/stats/...). */
export type Overview = S["Overview"];
export type Backlog = S["Backlog"];
export type SlowName = S["SlowName"];
export type Regression = S["Regression"];
export type Heatmap = S["Heatmap"];
export type HeatmapMetric = S["StatMetric"];
export type NameTrend = S["NameTrend"];

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

/** Frames of WS /api/live (not part of OpenAPI; see the live protocol in server/live.py). */
export type LiveMessage =
  | { type: "hello"; status: "ok" | "degraded" }
  | { type: "tasks"; items: TaskSummary[] }
  | { type: "group"; root_id: string; group: CollapsedGroup }
  | { type: "status"; status: "ok" | "degraded"; detail: string | null };

// From the server's schema (TaskState = UnfinishedState | TerminalState), in lifecycle order.
export const TASK_STATES: readonly TaskState[] = [...unfinishedStateValues, ...terminalStateValues];
export const FLOW_STATES: readonly FlowState[] = flowStateValues;
export const TERMINAL: ReadonlySet<string> = new Set<string>(terminalStateValues);
