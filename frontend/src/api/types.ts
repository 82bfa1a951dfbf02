// The JSON shapes of the API (src/celery_flow/flow/model.py). Once the server's OpenAPI schema is
// generated into schema.d.ts these aliases point at it; the names here are what the views use.
export type TaskState =
  | "PENDING"
  | "RECEIVED"
  | "STARTED"
  | "RETRY"
  | "SUCCESS"
  | "FAILURE"
  | "REVOKED"
  | "REJECTED";
export type FlowState = "PENDING" | "RUNNING" | "SUCCESS" | "FAILURE" | "REVOKED" | "REJECTED";
export type EdgeKind = "spawn" | "chain" | "chord" | "errback";
export type SegmentKind = "queued" | "received" | "running" | "retry";

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

export interface Segment {
  kind: SegmentKind;
  start: number;
  end?: number | null;
}

export interface EventRecord {
  id: string;
  type: string;
  ts: number;
  hostname?: string | null;
  pid?: number | null;
  retries?: number | null;
  exception?: string | null;
  traceback?: string | null;
  reason?: string | null;
  runtime?: number | null;
}

export interface TaskSummary {
  task_id: string;
  name: string | null;
  state: TaskState;
  root_id?: string | null;
  parent_id?: string | null;
  group_id?: string | null;
  chord_id?: string | null;
  trace_id?: string | null;
  hostname?: string | null;
  queue?: string | null;
  retries?: number;
  sent_at?: number | null;
  received_at?: number | null;
  started_at?: number | null;
  finished_at?: number | null;
  runtime?: number | null;
  exception?: string | null;
  links?: string[];
  link_errors?: string[];
  durations?: Record<string, number>;
  updated_at?: number | null;
}

export interface TaskDetail extends TaskSummary {
  args?: unknown;
  kwargs?: unknown;
  result?: unknown;
  traceback?: string | null;
  eta?: number | null;
  expires?: number | null;
  pid?: number | null;
  events?: EventRecord[];
  segments?: Segment[];
  children?: string[];
}

export interface FlowSummary {
  root_id: string;
  root_name: string | null;
  state: FlowState;
  counts: Record<string, number>;
  task_count: number;
  started_at: number | null;
  finished_at: number | null;
  duration: number | null;
  trace_id?: string | null;
  updated_at?: number | null;
}

export interface GraphNode extends TaskSummary {
  segments?: Segment[];
}

export interface GraphEdge {
  source: string;
  target: string;
  kind: EdgeKind;
}

export interface GraphGroup {
  id: string;
  kind: "group" | "chord";
  members: string[];
  callback_id?: string | null;
}

export interface FlowGraph {
  root_id: string;
  nodes: GraphNode[];
  edges: GraphEdge[];
  groups: GraphGroup[];
  critical_path?: string[];
}

export interface TraceView {
  trace_id: string;
  flows: FlowSummary[];
  tasks: TaskSummary[];
}

export interface RegisteredTask {
  name: string;
  counts: Record<string, number>;
  total: number;
  failure_rate: number;
  p50: number | null;
  p95: number | null;
  signature?: string | null;
  doc?: string | null;
  workers?: string[];
}

export interface WorkerInfo {
  hostname: string;
  status: "online" | "offline";
  last_heartbeat: number | null;
  online_since?: number | null;
  pid?: number | null;
  tasks_run?: number;
  registered?: string[];
  info?: Record<string, unknown>;
}

export interface Health {
  status?: string;
  [key: string]: unknown;
}

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
