// /flows/{root_id}: the workflow's graph and timeline, with the selected task's detail beside them.
import { useEffect } from "react";
import { api, ApiError, takePrefetchedFlow } from "../api/client";
import type { StateSummary } from "../api/types";
import { CountsBar, ErrorBox, Loading, StateChip } from "../components/common";
import { fmtDuration, fmtIso, fmtTime, shortId, shortName } from "../format";
import { useAsync, useDocumentTitle, useNow } from "../hooks";
import { useLiveFilter } from "../live";
import { Link, useRouter } from "../router";
import { prewarm } from "../graph/layout";
import { ModeSwitch, Workspace, type Mode } from "../graph/Workspace";

/** The server's figures for a flow or a trace: tasks, duration ("so far" while it runs), start, counts. */
export function FlowStats({
  summary,
  focus,
  setFocus,
}: {
  summary: StateSummary;
  focus: string | null;
  setFocus: (state: string | null) => void;
}) {
  const { task_count: count, started_at: start, duration } = summary;
  const running = summary.finished_at == null;
  const now = useNow(running ? 1000 : 60_000);
  const dur = running ? (start == null ? null : Math.max(now - start, 0)) : duration;
  return (
    <>
      <span className="stat">
        <b>{count.toLocaleString()}</b> {count === 1 ? "task" : "tasks"}
      </span>
      <span className="stat">
        <b>{fmtDuration(dur)}</b> {running ? "so far" : "total"}
      </span>
      <span className="stat" title={fmtIso(start)}>
        started <b>{fmtTime(start)}</b>
      </span>
      <div style={{ minWidth: 220 }}>
        <CountsBar counts={summary.counts} total={count} picked={focus} onPick={setFocus} />
      </div>
    </>
  );
}

export function HeaderControls({
  mode,
  setMode,
  critOn,
  setCritOn,
}: {
  mode: Mode;
  setMode: (m: Mode) => void;
  critOn: boolean;
  setCritOn: (v: boolean) => void;
}) {
  return (
    <>
      <span className="spacer" />
      <button
        type="button"
        className={`btn small ${critOn ? "on" : ""}`}
        aria-pressed={critOn}
        onClick={() => setCritOn(!critOn)}
        title="Highlight the chain of tasks that decided when the flow finished"
      >
        ◆ Critical path
      </button>
      <ModeSwitch mode={mode} setMode={setMode} />
    </>
  );
}

prewarm();

export default function FlowView({ rootId }: { rootId: string }) {
  useLiveFilter(rootId, null);
  const { navigate } = useRouter();
  const { data, error, reload } = useAsync((signal) => takePrefetchedFlow(rootId) ?? api.flow(rootId, signal), rootId);
  // A task id that is not a root (pasted from a log line): open its flow with the task selected.
  useEffect(() => {
    if (!(error instanceof ApiError) || error.status !== 404) return;
    const ctl = new AbortController();
    api
      .task(rootId, ctl.signal)
      .then((t) => {
        if (t.root_id && t.root_id !== rootId)
          navigate(`/flows/${encodeURIComponent(t.root_id)}?task=${encodeURIComponent(rootId)}`, { replace: true });
      })
      .catch(() => undefined);
    return () => ctl.abort();
  }, [error, rootId, navigate]);
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
      refetch={reload}
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
