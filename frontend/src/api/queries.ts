// Every server read the UI makes, as TanStack Query options: one key per resource, so a view, a prefetch
// and a live refetch of the same data share one cache entry and one request in flight.
import { QueryClient, queryOptions } from "@tanstack/react-query";
import { api, type Query } from "./client";
import type { GraphNode, GraphShape, TraceView } from "./types";

/**
 * The app's query cache. Nothing retries on its own (a 404 must show at once) and nothing refetches on
 * focus: the live socket says when data changed (see live.tsx) and views refetch then.
 */
export function createQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: { retry: false, refetchOnWindowFocus: false, refetchOnReconnect: false },
    },
  });
}

export const keys = {
  /** The flows list; its key holds the list's filters, from which the view builds the API query. */
  flows: (filters?: Record<string, string>) => (filters ? (["flows", filters] as const) : (["flows"] as const)),
  flow: (rootId: string) => ["flow", rootId] as const,
  task: (taskId: string) => ["task", taskId] as const,
  tasks: (q: Query) => ["tasks", q] as const,
  trace: (traceId: string) => ["trace", traceId] as const,
  registry: () => ["registry"] as const,
  workers: () => ["workers"] as const,
  schedules: () => ["schedules"] as const,
  /** The failure clusters; its key holds the window and name filter the view asks for. */
  failures: (filters?: Record<string, string>) =>
    filters ? (["failures", filters] as const) : (["failures"] as const),
  /** Everything under /api/stats; each key holds its window name (1h/24h/7d), not the moving epoch. */
  stats: (...parts: string[]) => ["stats", ...parts] as const,
};

/**
 * A flow's graph, the biggest response the UI loads. The route prefetches it while the graph view's code
 * loads; the few seconds of freshness let the view take that response instead of asking again.
 */
export const flowQuery = (rootId: string) =>
  queryOptions({ queryKey: keys.flow(rootId), queryFn: ({ signal }) => api.flow(rootId, signal), staleTime: 5000 });

export const taskQuery = (taskId: string) =>
  queryOptions({ queryKey: keys.task(taskId), queryFn: ({ signal }) => api.task(taskId, signal) });

export const tasksQuery = (q: Query) =>
  queryOptions({ queryKey: keys.tasks(q), queryFn: ({ signal }) => api.tasks(q, signal) });

export const registryQuery = () =>
  queryOptions({ queryKey: keys.registry(), queryFn: ({ signal }) => api.registry(signal) });

export const workersQuery = () =>
  queryOptions({ queryKey: keys.workers(), queryFn: ({ signal }) => api.workers(signal) });

export const schedulesQuery = () =>
  queryOptions({ queryKey: keys.schedules(), queryFn: ({ signal }) => api.schedules(signal) });

/** Flows drawn in full; a trace with more shows the newest this many and lists the rest as links. */
export const MAX_TRACE_FLOWS = 30;

export interface CombinedTrace {
  trace: TraceView;
  graph: GraphShape;
  drawn: number;
}

/** A trace and the graphs of its newest flows, put together as one graph. */
async function loadTrace(traceId: string, signal: AbortSignal): Promise<CombinedTrace> {
  const trace = await api.trace(traceId, signal);
  const flows = trace.flows.slice(0, MAX_TRACE_FLOWS);
  const graphs = await Promise.all(flows.map((f) => api.flow(f.root_id, signal).catch(() => null)));
  const nodes = new Map<string, GraphNode>();
  const edges: GraphShape["edges"] = [];
  const groups: GraphShape["groups"] = [];
  let critical: string[] = [];
  let lastEnd = -Infinity;
  for (const g of graphs) {
    if (!g) continue;
    for (const n of g.nodes) nodes.set(n.task_id, n);
    edges.push(...g.edges);
    groups.push(...g.groups);
    const end = Math.max(...g.nodes.map((n) => n.finished_at ?? n.started_at ?? n.sent_at ?? 0));
    if (end > lastEnd) {
      lastEnd = end;
      critical = g.critical_path ?? [];
    }
  }
  // Tasks of the trace whose flow was not drawn (or that have no flow) still appear, unconnected.
  for (const t of trace.tasks) if (!nodes.has(t.task_id)) nodes.set(t.task_id, { ...t, segments: [] });
  return {
    trace,
    graph: {
      root_id: flows[0]?.root_id ?? traceId,
      nodes: [...nodes.values()],
      edges,
      groups,
      critical_path: critical,
    },
    drawn: flows.length,
  };
}

export const traceQuery = (traceId: string) =>
  queryOptions({ queryKey: keys.trace(traceId), queryFn: ({ signal }) => loadTrace(traceId, signal) });
