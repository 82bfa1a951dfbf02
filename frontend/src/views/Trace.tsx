// /traces/{trace_id}: every flow carrying the trace id, as one combined graph and timeline.
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { keys, MAX_TRACE_FLOWS, traceQuery } from "../api/queries";
import { ErrorBox, Loading, StateChip } from "../components/common";
import { shortId, shortName } from "../format";
import { FlowStats, HeaderControls } from "../graph/FlowHeader";
import { Workspace } from "../graph/Workspace";
import { useDocumentTitle } from "../hooks";
import { useLiveFilter } from "../live";
import { Link } from "../router";

export default function TraceView({ traceId }: { traceId: string }) {
  useDocumentTitle(`Trace ${traceId.slice(0, 8)}`);
  useLiveFilter(null, traceId);
  const queryClient = useQueryClient();
  const { data, error } = useQuery(traceQuery(traceId));
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
    .slice(0, MAX_TRACE_FLOWS)
    .map((f) => ({ root_id: f.root_id, label: `flow · ${shortName(f.root_name)}` }));
  return (
    <Workspace
      graph={data.graph}
      flows={labels}
      refetch={() => void queryClient.invalidateQueries({ queryKey: keys.trace(traceId) })}
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
