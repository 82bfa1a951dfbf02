// /flows/{root_id}: the workflow's graph and timeline, with the selected task's detail beside them.
import { useEffect } from "react";
import { api, ApiError, takePrefetchedFlow } from "../api/client";
import type { GraphNode } from "../api/types";
import { TERMINAL } from "../api/types";
import { CountsBar, ErrorBox, Loading, StateChip } from "../components/common";
import { fmtDuration, fmtIso, fmtTime, shortId, shortName } from "../format";
import { useAsync, useDocumentTitle, useNow } from "../hooks";
import { useLiveFilter } from "../live";
import { Link, useRouter } from "../router";
import { prewarm } from "../graph/layout";
import { ModeSwitch, Workspace, type Mode } from "../graph/Workspace";

/** A flow's state from its tasks: failed if any failed, running while any is not finished. */
export function flowState(tasks: Iterable<GraphNode>): string {
  let running = false;
  let failed = false;
  let revoked = false;
  for (const t of tasks) {
    if (t.state === "FAILURE" || t.state === "REJECTED") failed = true;
    else if (t.state === "REVOKED") revoked = true;
    else if (!TERMINAL.has(t.state)) running = true;
  }
  return running ? "RUNNING" : failed ? "FAILURE" : revoked ? "REVOKED" : "SUCCESS";
}

export function countStates(tasks: Iterable<GraphNode>): Record<string, number> {
  const c: Record<string, number> = {};
  for (const t of tasks) c[t.state] = (c[t.state] ?? 0) + 1;
  return c;
}

export function span(tasks: Iterable<GraphNode>): [number | null, number | null] {
  let lo: number | null = null;
  let hi: number | null = null;
  for (const t of tasks) {
    const s = t.sent_at ?? t.received_at ?? t.started_at;
    if (s && (lo === null || s < lo)) lo = s;
    if (t.finished_at && (hi === null || t.finished_at > hi)) hi = t.finished_at;
  }
  return [lo, hi];
}

export function FlowStats({
  tasks,
  running,
  focus,
  setFocus,
}: {
  tasks: Map<string, GraphNode>;
  running: boolean;
  focus: string | null;
  setFocus: (state: string | null) => void;
}) {
  const now = useNow(running ? 1000 : 60_000);
  const [start, end] = span(tasks.values());
  const dur = start === null ? null : (running ? now : (end ?? now)) - start;
  return (
    <>
      <span className="stat">
        <b>{tasks.size.toLocaleString()}</b> {tasks.size === 1 ? "task" : "tasks"}
      </span>
      <span className="stat">
        <b>{fmtDuration(dur)}</b> {running ? "so far" : "total"}
      </span>
      <span className="stat" title={fmtIso(start)}>
        started <b>{fmtTime(start)}</b>
      </span>
      <div style={{ minWidth: 220 }}>
        <CountsBar counts={countStates(tasks.values())} total={tasks.size} picked={focus} onPick={setFocus} />
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
  useDocumentTitle(root?.name ? `${shortName(root.name)} flow` : `Flow ${rootId.slice(0, 8)}`);
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
      header={({ tasks, running, mode, setMode, critOn, setCritOn, focus, setFocus }) => (
        <div className="flowhead" data-testid="flow-head">
          <StateChip state={flowState(tasks.values())} />
          <h1 title={root?.name ?? undefined}>{root?.name ?? "(unknown task)"}</h1>
          <Link to={`/tasks/${encodeURIComponent(rootId)}`} className="mono sub" title={rootId}>
            {shortId(rootId)}
          </Link>
          {root?.trace_id && (
            <Link to={`/traces/${encodeURIComponent(root.trace_id)}`} className="sub" title={`trace ${root.trace_id}`}>
              trace {shortId(root.trace_id)}
            </Link>
          )}
          <FlowStats tasks={tasks} running={running} focus={focus} setFocus={setFocus} />
          <HeaderControls mode={mode} setMode={setMode} critOn={critOn} setCritOn={setCritOn} />
        </div>
      )}
    />
  );
}
