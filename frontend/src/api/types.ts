// The JSON shapes of the API, generated from the server's OpenAPI schema (schema.d.ts, `npm run
// gen-types`): the names here are what the views use, so a model change breaks the build, not the page.
import type { components } from "./schema";

type S = components["schemas"];

export type TaskSummary = S["TaskSummary"];
export type TaskDetail = S["TaskDetail"];
export type TaskState = TaskSummary["state"];
export type EventRecord = S["EventRecord"];
export type Segment = S["Segment"];
export type SegmentKind = Segment["kind"];
export type FlowSummary = S["FlowSummary"];
export type FlowState = FlowSummary["state"];
export type GraphNode = S["GraphNode"];
export type GraphEdge = S["GraphEdge"];
export type EdgeKind = GraphEdge["kind"];
export type GraphGroup = S["GraphGroup"];
export type FlowGraph = S["FlowGraph"];
export type TraceView = S["TraceView"];
export type RegisteredTask = S["RegisteredTask"];
export type WorkerInfo = S["WorkerInfo"];
export type Health = S["HealthReport"];
export type TaskPage = S["TaskPage"];
export type FlowPage = S["FlowPage"];

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

/** Frames of WS /api/live (not part of OpenAPI; see the live protocol in server/live.py). */
export type LiveMessage =
  | { type: "hello"; status: "ok" | "degraded" }
  | { type: "tasks"; items: TaskSummary[] }
  | { type: "status"; status: "ok" | "degraded"; detail: string | null };

export const TASK_STATES: TaskState[] = [
  "PENDING",
  "RECEIVED",
  "STARTED",
  "RETRY",
  "SUCCESS",
  "FAILURE",
  "REVOKED",
  "REJECTED",
];
export const FLOW_STATES: FlowState[] = ["PENDING", "RUNNING", "SUCCESS", "FAILURE", "REVOKED", "REJECTED"];

export const TERMINAL: ReadonlySet<string> = new Set(["SUCCESS", "FAILURE", "REVOKED", "REJECTED"]);
