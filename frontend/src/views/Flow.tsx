// /flows/{root_id}: the workflow's graph and timeline, with the selected task's detail beside them.
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect } from "react";
import { ApiError } from "../api/client";
import { flowQuery, keys, taskQuery } from "../api/queries";
import { ErrorBox, Loading, StateChip } from "../components/common";
import { shortId, shortName } from "../format";
import { FlowStats, HeaderControls } from "../graph/FlowHeader";
import { Workspace } from "../graph/Workspace";
import { useDocumentTitle } from "../hooks";
import { useLiveFilter } from "../live";
import { Link, useNavigate } from "../router";

export default function FlowView({ rootId }: { rootId: string }) {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const { data, error } = useQuery(flowQuery(rootId));
  // Groups the server collapsed: their members' changes come as the group's figures.
  useLiveFilter(rootId, null, (data?.collapsed ?? []).map((c) => c.id).join(","));
  // A task id that is not a root (pasted from a log line): open its flow with the task selected.
  const notFound = error instanceof ApiError && error.status === 404;
  const asTask = useQuery({ ...taskQuery(rootId), enabled: notFound && !data });
  const realRoot = asTask.data?.root_id;
  useEffect(() => {
    if (realRoot && realRoot !== rootId)
      navigate(`/flows/${encodeURIComponent(realRoot)}?task=${encodeURIComponent(rootId)}`, { replace: true });
  }, [realRoot, rootId, navigate]);
  const root = data?.nodes.find((n) => n.task_id === rootId);
  // The list's name for the flow: the root task's, or a group's first member when no task is the root.
  const name = data?.summary.root_name ?? root?.name;
  useDocumentTitle(name ? `${shortName(name)} flow` : `Flow ${rootId.slice(0, 8)}`);
  if (error && !data)
    return (
      <div className="page">
        <ErrorBox error={error} what={`Flow ${rootId}`} />
      </div>
    );
  if (!data) return <Loading what="Loading flow" />;
  return (
    <Workspace
      graph={data}
      rootId={rootId}
      refetch={() => void queryClient.invalidateQueries({ queryKey: keys.flow(rootId) })}
      accept={(t) => t.root_id === rootId || t.task_id === rootId}
      header={({ mode, setMode, critOn, setCritOn, focus, setFocus }) => (
        <div className="flowhead" data-testid="flow-head">
          {/* The server's state, refetched with the graph after every live change (Workspace). */}
          <StateChip state={data.summary.state} />
          <h1 title={name ?? undefined}>{name ?? "(unknown task)"}</h1>
          <Link to={`/tasks/${encodeURIComponent(rootId)}`} className="mono sub" title={rootId}>
            {shortId(rootId)}
          </Link>
          {root?.trace_id && (
            <Link to={`/traces/${encodeURIComponent(root.trace_id)}`} className="sub" title={`trace ${root.trace_id}`}>
              trace {shortId(root.trace_id)}
            </Link>
          )}
          <FlowStats summary={data.summary} focus={focus} setFocus={setFocus} />
          <HeaderControls mode={mode} setMode={setMode} critOn={critOn} setCritOn={setCritOn} />
        </div>
      )}
    />
  );
}
