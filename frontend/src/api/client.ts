import { API } from "./base";
import type {
  FailureList,
  FlowGraph,
  MemberPage,
  FlowSummary,
  Health,
  Heatmap,
  HeatmapMetric,
  NameTrend,
  Overview,
  Page,
  RegisteredTask,
  Schedules,
  TaskDetail,
  TaskSummary,
  TraceView,
  WorkerInfo,
} from "./types";

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
  ) {
    super(message);
  }
}

export type Query = Record<string, string | number | null | undefined>;

function qs(query: Query | undefined): string {
  if (!query) return "";
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== null && v !== undefined && v !== "") p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

async function get<T>(path: string, query?: Query, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${API}${path}${qs(query)}`, { signal, headers: { Accept: "application/json" } });
  } catch (err) {
    if ((err as Error).name === "AbortError") throw err;
    throw new ApiError(0, "the server is not reachable");
  }
  if (!res.ok) {
    let msg = `${res.status} ${res.statusText}`;
    try {
      const body = (await res.json()) as { detail?: unknown };
      if (typeof body.detail === "string") msg = body.detail;
      else if (body.detail) msg = JSON.stringify(body.detail);
    } catch {
      /* not JSON: keep the status line */
    }
    throw new ApiError(res.status, msg);
  }
  return (await res.json()) as T;
}

const enc = encodeURIComponent;

export const api = {
  health: (s?: AbortSignal) => get<Health>("/health", undefined, s),
  flows: (q: Query, s?: AbortSignal) => get<Page<FlowSummary>>("/flows", q, s),
  flow: (rootId: string, s?: AbortSignal) => get<FlowGraph>(`/flows/${enc(rootId)}`, undefined, s),
  /** One page of a collapsed group's members (keyset: pass `next_cursor` back as `cursor`). */
  members: (rootId: string, groupId: string, q: Query, s?: AbortSignal) =>
    get<MemberPage>(`/flows/${enc(rootId)}/groups/${enc(groupId)}/members`, q, s),
  tasks: (q: Query, s?: AbortSignal) => get<Page<TaskSummary>>("/tasks", q, s),
  task: (id: string, s?: AbortSignal) => get<TaskDetail>(`/tasks/${enc(id)}`, undefined, s),
  trace: (id: string, s?: AbortSignal) => get<TraceView>(`/traces/${enc(id)}`, undefined, s),
  registry: (s?: AbortSignal) => get<RegisteredTask[]>("/registry", undefined, s),
  workers: (s?: AbortSignal) => get<WorkerInfo[]>("/workers", undefined, s),
  failures: (q: Query, s?: AbortSignal) => get<FailureList>("/failures", q, s),
  schedules: (s?: AbortSignal) => get<Schedules>("/schedules", undefined, s),
  overview: (q: { since: number; until?: number }, s?: AbortSignal) => get<Overview>("/stats/overview", q, s),
  heatmap: (q: { name?: string; metric: HeatmapMetric; since: number; until?: number }, s?: AbortSignal) =>
    get<Heatmap>("/stats/heatmap", q, s),
  nameTrend: (name: string, q: { since: number; until?: number }, s?: AbortSignal) =>
    get<NameTrend>(`/stats/names/${enc(name)}`, q, s),
};
