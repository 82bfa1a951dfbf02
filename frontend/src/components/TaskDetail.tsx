// Everything known about one task; used as a page (/tasks/{id}) and as the side panel of a flow.
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useMemo } from "react";
import { keys, taskQuery, tasksQuery } from "../api/queries";
import type { EventRecord, TaskDetail, TaskSummary } from "../api/types";
import { fmtDuration, fmtIso, fmtTime, shortId, shortName, splitIds } from "../format";
import { useLiveTasks } from "../live";
import { Link } from "../router";
import { CopyButton, ErrorBox, Loading, Mono, StateChip, StuckBadge } from "./common";
import { JsonTree } from "./JsonTree";

const EVENT_LABEL: Record<string, string> = {
  sent: "Sent (queued)",
  received: "Received by worker",
  started: "Started",
  retried: "Retry scheduled",
  succeeded: "Succeeded",
  failed: "Failed",
  revoked: "Revoked",
  rejected: "Rejected",
};

const DURATION_LABEL: Record<string, string> = {
  PENDING: "queued",
  RECEIVED: "waiting in worker",
  STARTED: "running",
  RETRY: "waiting to retry",
};

const NO_RESULT: Record<string, string> = {
  FAILURE: "no result: the task failed",
  NOT_RUN: "no result: the task never ran",
  LOST: "no result: the task was lost with its worker",
  REVOKED: "no result: the task was revoked",
  REJECTED: "no result: the task was rejected",
};

function TaskLink({ id, names, self }: { id: string; names: Map<string, TaskSummary>; self?: string }) {
  const t = names.get(id);
  return (
    <Link
      to={`/tasks/${encodeURIComponent(id)}`}
      className="tasklink"
      title={id}
      aria-current={id === self ? "page" : undefined}
    >
      {t && <span className={`dot st-${t.state}`} aria-hidden="true" />}
      <span>{t ? shortName(t.name) : "task"}</span> <span className="mono sub">{shortId(id)}</span>
    </Link>
  );
}

/** A reason ("upstream <id> failed") with each task id in it a link to that task. */
function ReasonText({ text, names }: { text: string; names: Map<string, TaskSummary> }) {
  const parts = splitIds(text);
  return (
    <>
      {parts.map((part, i) =>
        i % 2 === 1 ? <TaskLink key={i} id={part} names={names} /> : <span key={i}>{part}</span>,
      )}
    </>
  );
}

/**
 * "N more like this": the failed tasks of this task's failure cluster, as a link to them. The cluster
 * counts this task only when it failed (a task that retried and then succeeded has a cluster too).
 */
function ClusterLink({ task }: { task: TaskDetail }) {
  const size = task.cluster_size;
  if (!task.fingerprint || size === null || size === undefined) return null;
  const failed = task.state === "FAILURE";
  const more = failed ? size - 1 : size;
  const to = `/tasks?fingerprint=${encodeURIComponent(task.fingerprint)}`;
  return (
    <div className="cluster-link" data-testid="cluster-link">
      {more > 0 ? (
        <Link to={to} title="Every failed task with the same exception type and traceback frames">
          {more.toLocaleString()} {failed ? "more" : more === 1 ? "failed task" : "failed tasks"} like this →
        </Link>
      ) : (
        <span className="muted">
          No {failed ? "other " : ""}task failed like this. <Link to={to}>Its cluster</Link>
        </span>
      )}
    </div>
  );
}

function History({ events, compact }: { events: EventRecord[]; compact?: boolean }) {
  const sorted = [...events].sort((a, b) => a.ts - b.ts);
  const first = sorted[0]?.ts;
  return (
    <table className="table compact history" data-testid="history">
      <thead>
        <tr>
          <th>Event</th>
          <th>Time</th>
          <th className="num">+ prev</th>
          {!compact && <th className="num">+ since first</th>}
          {!compact && <th>Where</th>}
          <th>Details</th>
        </tr>
      </thead>
      <tbody>
        {sorted.map((e, i) => (
          <tr key={e.id} data-event={e.type}>
            <td>
              <span className={`evtype ev-${e.type}`}>{EVENT_LABEL[e.type] ?? e.type}</span>
              {e.retries ? (
                <span className="badge" title="attempt number">
                  #{e.retries}
                </span>
              ) : null}
            </td>
            <td title={fmtIso(e.ts)} className="mono">
              {fmtTime(e.ts)}
            </td>
            <td className="num">{i === 0 ? "–" : fmtDuration(e.ts - sorted[i - 1].ts)}</td>
            {!compact && <td className="num">{first === undefined || i === 0 ? "–" : fmtDuration(e.ts - first)}</td>}
            {!compact && (
              <td className="mono sub">
                {e.hostname ?? ""}
                {e.pid ? ` pid ${e.pid}` : ""}
              </td>
            )}
            <td>
              {e.runtime !== null && e.runtime !== undefined && <span>ran {fmtDuration(e.runtime)} </span>}
              {e.reason && <span className="reason">{e.reason} </span>}
              {e.exception && <span className="exc mono">{e.exception}</span>}
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function TaskDetailBody({
  task,
  names,
  siblings,
  compact,
}: {
  task: TaskDetail;
  names: Map<string, TaskSummary>;
  siblings: string[];
  compact?: boolean;
}) {
  const events = task.events ?? [];
  const retries = events.filter((e) => e.type === "retried").sort((a, b) => a.ts - b.ts);
  const failedEv = [...events].reverse().find((e) => e.type === "failed");
  const traceback = task.traceback ?? failedEv?.traceback ?? null;
  const exception = task.exception ?? failedEv?.exception ?? null;
  const durations = Object.entries(task.durations ?? {}).filter(([, v]) => v > 0);
  return (
    <div className={`taskdetail ${compact ? "compact" : ""}`} data-testid="task-detail" data-task-id={task.task_id}>
      <div className="td-head">
        <StateChip state={task.state} />
        <h2 className="td-name" title={task.name ?? undefined}>
          {task.name ? (
            <Link
              to={`/registry/${encodeURIComponent(task.name)}`}
              className="td-namelink"
              title="About this task name"
            >
              {task.name}
            </Link>
          ) : (
            "(unknown task)"
          )}
        </h2>
        {task.stuck && <StuckBadge />}
      </div>
      {task.reason && (
        <div className={`td-reason st-${task.state}`} data-testid="task-reason">
          <strong>{task.state === "LOST" ? "Lost" : task.state === "NOT_RUN" ? "Never ran" : "Why"}:</strong>{" "}
          <ReasonText text={task.reason} names={names} />
        </div>
      )}
      {task.state === "PLANNED" && !task.reason && (
        <div className="td-reason st-PLANNED" data-testid="task-reason">
          A later step of the workflow, known from an earlier task's message; not sent yet.
        </div>
      )}
      <div className="td-ids">
        <span>
          id <Mono>{task.task_id}</Mono> <CopyButton text={task.task_id} label="Copy id" />
        </span>
      </div>
      <dl className="facts">
        <dt>Worker</dt>
        <dd className="mono">
          {task.hostname ? (
            <Link to={`/workers`}>{task.hostname}</Link>
          ) : (
            <span className="muted">
              {task.state === "PLANNED" || task.state === "NOT_RUN" ? "never sent" : "not yet received"}
            </span>
          )}
          {task.pid ? <span className="sub"> pid {task.pid}</span> : null}
        </dd>
        <dt>Queue</dt>
        <dd className="mono">{task.queue ?? "–"}</dd>
        <dt>Sent</dt>
        <dd title={fmtIso(task.sent_at)}>{fmtTime(task.sent_at)}</dd>
        <dt>Started</dt>
        <dd title={fmtIso(task.started_at)}>{fmtTime(task.started_at)}</dd>
        <dt>Finished</dt>
        <dd title={fmtIso(task.finished_at)}>{fmtTime(task.finished_at)}</dd>
        <dt>Runtime</dt>
        <dd>{fmtDuration(task.runtime)}</dd>
        <dt>Retries</dt>
        <dd>{task.retries ?? 0}</dd>
        {task.eta ? (
          <>
            <dt>ETA</dt>
            <dd>{fmtTime(task.eta)}</dd>
          </>
        ) : null}
        {task.expires ? (
          <>
            <dt>Expires</dt>
            <dd>{fmtTime(task.expires)}</dd>
          </>
        ) : null}
        {task.root_id && (
          <>
            <dt>Flow</dt>
            <dd>
              <Link to={`/flows/${encodeURIComponent(task.root_id)}?task=${encodeURIComponent(task.task_id)}`}>
                open graph
              </Link>{" "}
              <span className="mono sub">{shortId(task.root_id)}</span>
            </dd>
          </>
        )}
        {task.trace_id && (
          <>
            <dt>Trace</dt>
            <dd>
              <Link to={`/traces/${encodeURIComponent(task.trace_id)}`} className="mono">
                {task.trace_id}
              </Link>
            </dd>
          </>
        )}
      </dl>
      {durations.length > 0 && (
        <div className="durations" aria-label="Time in each state" data-testid="durations">
          {durations.map(([k, v]) => (
            <span key={k} className={`dur st-${k}`}>
              <span className="dot" aria-hidden="true" /> {DURATION_LABEL[k] ?? k.toLowerCase()} {fmtDuration(v)}
            </span>
          ))}
        </div>
      )}

      {(exception || traceback) && (
        <section className="td-section">
          <h3>Exception</h3>
          {exception && (
            <div className="exception mono" data-testid="exception">
              {exception}
            </div>
          )}
          <ClusterLink task={task} />
          {traceback && (
            <div className="tbwrap">
              <div className="tbbar">
                <span className="muted">Traceback</span>
                <CopyButton text={traceback} label="Copy traceback" />
              </div>
              <pre className="traceback" data-testid="traceback">
                {traceback}
              </pre>
            </div>
          )}
        </section>
      )}

      {retries.length > 0 && (
        <section className="td-section">
          <h3>Retries ({retries.length})</h3>
          <ol className="retries" data-testid="retries">
            {retries.map((r, i) => (
              <li key={r.id}>
                <span className="mono">{fmtTime(r.ts)}</span> attempt {(r.retries ?? i) + 1}:{" "}
                <span className="reason">{r.reason ?? r.exception ?? "no reason recorded"}</span>
                {r.reason && r.exception && r.reason !== r.exception && (
                  <span className="mono sub"> ({r.exception})</span>
                )}
              </li>
            ))}
          </ol>
        </section>
      )}

      <section className="td-section">
        <h3>Arguments</h3>
        {(task.state === "PLANNED" || task.state === "NOT_RUN") && task.args == null && task.kwargs == null ? (
          <div className="muted">not known: a step's arguments are known once it is sent</div>
        ) : (
          <div className="kv">
            <div className="kvlabel">args</div>
            <JsonTree value={task.args} label="args" />
            <div className="kvlabel">kwargs</div>
            <JsonTree value={task.kwargs} label="kwargs" />
          </div>
        )}
      </section>
      <section className="td-section">
        <h3>Result</h3>
        {task.state === "SUCCESS" || task.result !== null ? (
          <JsonTree value={task.result} label="result" />
        ) : (
          <div className="muted">{NO_RESULT[task.state] ?? "no result yet"}</div>
        )}
      </section>

      <section className="td-section relations">
        <h3>Related tasks</h3>
        <dl className="facts">
          <dt>Parent</dt>
          <dd>
            {task.parent_id && task.parent_id !== task.task_id ? (
              <TaskLink id={task.parent_id} names={names} />
            ) : (
              <span className="muted">none (root)</span>
            )}
          </dd>
          <dt>Children ({task.children?.length ?? 0})</dt>
          <dd className="linklist">
            {(task.children ?? []).slice(0, 200).map((c) => (
              <TaskLink key={c} id={c} names={names} />
            ))}
            {(task.children?.length ?? 0) > 200 && (
              <span className="muted">and {task.children!.length - 200} more</span>
            )}
            {(task.children?.length ?? 0) === 0 && <span className="muted">none</span>}
          </dd>
          <dt>Siblings ({siblings.length})</dt>
          <dd className="linklist">
            {siblings.slice(0, 100).map((c) => (
              <TaskLink key={c} id={c} names={names} />
            ))}
            {siblings.length > 100 && <span className="muted">and {siblings.length - 100} more</span>}
            {siblings.length === 0 && <span className="muted">none</span>}
          </dd>
          {(task.links?.length ?? 0) > 0 && (
            <>
              <dt>On success</dt>
              <dd className="linklist">
                {task.links!.map((c) => (
                  <TaskLink key={c} id={c} names={names} />
                ))}
              </dd>
            </>
          )}
          {(task.link_errors?.length ?? 0) > 0 && (
            <>
              <dt>On error</dt>
              <dd className="linklist">
                {task.link_errors!.map((c) => (
                  <TaskLink key={c} id={c} names={names} />
                ))}
              </dd>
            </>
          )}
        </dl>
      </section>

      <section className="td-section">
        <h3>State history</h3>
        {events.length ? <History events={events} compact={compact} /> : <div className="muted">no events stored</div>}
      </section>
    </div>
  );
}

/**
 * Loads a task plus what is needed to name its relatives. `known` (the flow's nodes, when shown beside a
 * graph) saves the extra requests for names and siblings.
 */
export function TaskDetailLoader({
  taskId,
  known,
  compact,
}: {
  taskId: string;
  known?: Map<string, TaskSummary>;
  compact?: boolean;
}) {
  const queryClient = useQueryClient();
  const task = useQuery(taskQuery(taskId));
  const rootId = task.data?.root_id ?? null;
  const parentId = task.data?.parent_id && task.data.parent_id !== taskId ? task.data.parent_id : null;
  // Without the flow's nodes: the flow's tasks name the links, the parent's children are the siblings.
  // Both are a nicety: when they fail, links still work with ids.
  const flowTasks = useQuery({ ...tasksQuery({ root_id: rootId, limit: 500 }), enabled: !known && rootId !== null });
  const parent = useQuery({ ...taskQuery(parentId ?? ""), enabled: !known && parentId !== null });

  const names = useMemo(() => {
    if (known) return known;
    return new Map((flowTasks.data?.items ?? []).map((t) => [t.task_id, t] as const));
  }, [known, flowTasks.data]);
  const siblings = useMemo(() => {
    if (!parentId) return [];
    if (known)
      return [...known.values()]
        .filter((t) => t.parent_id === parentId && t.task_id !== taskId)
        .map((t) => t.task_id);
    return (parent.data?.children ?? []).filter((c) => c !== taskId);
  }, [known, parent.data, parentId, taskId]);

  useLiveTasks((items) => {
    if (!items.some((t) => t.task_id === taskId)) return;
    void queryClient.invalidateQueries({ queryKey: keys.task(taskId) });
    if (known) return;
    if (rootId !== null) void queryClient.invalidateQueries({ queryKey: keys.tasks({ root_id: rootId, limit: 500 }) });
    if (parentId !== null) void queryClient.invalidateQueries({ queryKey: keys.task(parentId) });
  });

  if (task.error && !task.data) return <ErrorBox error={task.error} what={`Task ${taskId}`} />;
  if (!task.data || flowTasks.isLoading || parent.isLoading) return <Loading what="Loading task" />;
  return <TaskDetailBody task={task.data} names={names} siblings={siblings} compact={compact} />;
}
