// /traces/{trace_id}: every flow carrying the trace id, as one combined graph and timeline.
import { api } from "../api/client";
import type { GraphNode, GraphShape, TraceView } from "../api/types";
import { ErrorBox, Loading, StateChip } from "../components/common";
import { shortId, shortName } from "../format";
import { useAsync, useDocumentTitle } from "../hooks";
import { useLiveFilter } from "../live";
import { Link } from "../router";
import { Workspace } from "../graph/Workspace";
import { FlowStats, HeaderControls } from "./Flow";

/** Flows drawn in full; a trace with more shows the newest this many and lists the rest as links. */
const MAX_FLOWS = 30;

interface Combined {
  trace: TraceView;
  graph: GraphShape;
  drawn: number;
}

async function loadTrace(traceId: string, signal: AbortSignal): Promise<Combined> {
  const trace = await api.trace(traceId, signal);
  const flows = trace.flows.slice(0, MAX_FLOWS);
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

export function TraceViewPage({ traceId }: { traceId: string }) {
  useDocumentTitle(`Trace ${traceId.slice(0, 8)}`);
  useLiveFilter(null, traceId);
  const { data, error, reload } = useAsync((signal) => loadTrace(traceId, signal), traceId);
  if (error && !data)
    return (
      <div className="page">
        <ErrorBox error={error} what={`Trace ${traceId}`} />
      </div>
    );
  if (!data) return <Loading what="Loading trace" />;
  // The server's state of the trace's flows taken together, refetched after every live change.
  const summary = data.trace.summary;
  const labels = data.trace.flows
    .slice(0, MAX_FLOWS)
    .map((f) => ({ root_id: f.root_id, label: `flow · ${shortName(f.root_name)}` }));
  return (
    <Workspace
      graph={data.graph}
      flows={labels}
      refetch={reload}
      accept={(t) => t.trace_id === traceId}
      header={({ mode, setMode, critOn, setCritOn, focus, setFocus }) => (
        <>
          <div className="flowhead" data-testid="trace-head">
            {summary && <StateChip state={summary.state} />}
            <h1 className="ellipsis" title={traceId}>
              trace {traceId}
            </h1>
            <span className="stat">
              <b>{data.trace.flows.length}</b> {data.trace.flows.length === 1 ? "flow" : "flows"}
            </span>
            {summary && <FlowStats summary={summary} focus={focus} setFocus={setFocus} />}
            <HeaderControls mode={mode} setMode={setMode} critOn={critOn} setCritOn={setCritOn} />
          </div>
          <div className="trace-flows" aria-label="Flows in this trace">
            {data.trace.flows.map((f) => (
              <Link key={f.root_id} to={`/flows/${encodeURIComponent(f.root_id)}`} title={f.root_id}>
                <span className={`dot st-${f.state}`} aria-hidden="true" />
                {shortName(f.root_name)} <span className="mono sub">{shortId(f.root_id)}</span>
                <span className="sub">
                  {f.task_count} {f.task_count === 1 ? "task" : "tasks"}
                </span>
              </Link>
            ))}
            {data.trace.flows.length > data.drawn && (
              <span className="muted">graph shows the newest {data.drawn} flows</span>
            )}
          </div>
        </>
      )}
    />
  );
}

export default TraceViewPage;
