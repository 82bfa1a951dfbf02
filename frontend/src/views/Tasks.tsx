// /tasks: tasks (not flows), newest first: what the search box finds (words in arguments, results and
// errors; key:value for a kwarg), a failure cluster's tasks (?fingerprint=) and the stuck ones (?stuck=).
import { useQuery } from "@tanstack/react-query";
import { type FormEvent } from "react";
import { api } from "../api/client";
import { keys } from "../api/queries";
import { TASK_STATES, type TaskSummary } from "../api/types";
import {
  Empty,
  ErrorBox,
  Loading,
  Pager,
  SEARCH_HINT,
  StateChip,
  StateField,
  StuckBadge,
  TaskNameField,
} from "../components/common";
import { fmtAgo, fmtDuration, fmtIso, fmtTime, shortId, shortName } from "../format";
import { useDocumentTitle, useDraft, useNow } from "../hooks";
import { useLiveInvalidate } from "../live";
import { Link, useNavigate, useSearchParams, withQuery } from "../router";

const PAGE = 50;


interface Filters extends Record<string, string> {
  q: string;
  state: string;
  name: string;
  fingerprint: string;
  stuck: string;
  worker: string;
  queue: string;
  since: string;
  until: string;
}

function readFilters(s: URLSearchParams): Filters {
  return {
    q: s.get("q") ?? "",
    state: s.get("state") ?? "",
    name: s.get("name") ?? "",
    fingerprint: s.get("fingerprint") ?? "",
    stuck: s.get("stuck") === "true" ? "true" : "",
    worker: s.get("worker") ?? "",
    queue: s.get("queue") ?? "",
    since: s.get("since") ?? "",
    until: s.get("until") ?? "",
  };
}

const NONE: Filters = {
  q: "",
  state: "",
  name: "",
  fingerprint: "",
  stuck: "",
  worker: "",
  queue: "",
  since: "",
  until: "",
};

/** Why the row's task is where it is: its exception, or why it never ran or was lost. */
function why(t: TaskSummary): string | null {
  return t.exception ?? t.reason ?? null;
}

function TaskRow({ t, now }: { t: TaskSummary; now: number }) {
  const navigate = useNavigate();
  const to = `/tasks/${encodeURIComponent(t.task_id)}`;
  const when = t.started_at ?? t.sent_at ?? t.updated_at ?? null;
  const running = t.state === "STARTED" && t.started_at !== null && t.started_at !== undefined;
  const text = why(t);
  return (
    <tr
      className="clickrow"
      data-task-id={t.task_id}
      data-state={t.state}
      onClick={(e) => {
        if ((e.target as HTMLElement).closest("a,button")) return;
        navigate(to);
      }}
    >
      <td>
        <StateChip state={t.state} />
        {t.stuck && <StuckBadge />}
      </td>
      <td className="namecell">
        <Link to={to} className="flowname" title={t.name ?? undefined}>
          {shortName(t.name)}
        </Link>
        <div className="sub mono" title={t.task_id}>
          {t.name && t.name !== shortName(t.name) ? `${t.name} · ` : ""}
          {shortId(t.task_id)}
        </div>
      </td>
      <td className="whycell">
        {text ? (
          <span className={t.exception ? "exc mono ellipsis" : "muted ellipsis"} title={text}>
            {text}
          </span>
        ) : (
          <span className="muted">–</span>
        )}
      </td>
      <td className="num">{running ? fmtDuration(now - (t.started_at ?? now)) : fmtDuration(t.runtime)}</td>
      <td title={fmtIso(when)}>{fmtAgo(when, now)}</td>
      <td>
        {t.root_id ? (
          <Link
            to={`/flows/${encodeURIComponent(t.root_id)}?task=${encodeURIComponent(t.task_id)}`}
            className="mono"
            title={`flow ${t.root_id}`}
          >
            {shortId(t.root_id)}
          </Link>
        ) : (
          <span className="muted">–</span>
        )}
      </td>
    </tr>
  );
}

/** Tasks as the Tasks page lists them: state, name, why, runtime, when, flow; a row opens its task. */
export function TaskTable({ items, now }: { items: TaskSummary[]; now: number }) {
  return (
    <table className="table tasks" data-testid="tasks-table">
      <thead>
        <tr>
          <th>State</th>
          <th>Task</th>
          <th>Exception or reason</th>
          <th className="num">Runtime</th>
          <th>When</th>
          <th>Flow</th>
        </tr>
      </thead>
      <tbody>
        {items.map((t) => (
          <TaskRow key={t.task_id} t={t} now={now} />
        ))}
      </tbody>
    </table>
  );
}

export function TasksView() {
  const navigate = useNavigate();
  const [search] = useSearchParams();
  const filters = readFilters(search);
  const cursor = search.get("cursor") ?? "";
  const [draft, setDraft] = useDraft<Filters>(filters);
  const now = useNow(1000);
  useDocumentTitle(filters.fingerprint ? "Failure cluster" : filters.q ? `Tasks matching ${filters.q}` : "Tasks");

  const fkey = JSON.stringify(filters);

  const query = { ...filters, limit: PAGE, cursor };
  const { data, error, isLoading } = useQuery({
    queryKey: keys.tasks(query),
    queryFn: ({ signal }) => api.tasks(query, signal),
  });
  useLiveInvalidate(keys.tasks(query));

  const apply = (f: Filters, e?: FormEvent) => {
    e?.preventDefault();
    navigate(withQuery("/tasks", { ...f }));
  };
  const active = Object.values(filters).some(Boolean);
  const first = data?.items[0];

  return (
    <div className="page">
      <div className="pagehead">
        <h1>{filters.fingerprint ? "Failure cluster" : filters.stuck ? "Stuck tasks" : "Tasks"}</h1>
        <span className="muted">
          {filters.fingerprint
            ? "every failed task with the same exception type and traceback frames, newest first"
            : filters.stuck
              ? "running far longer than their name's own history, or than the server's --stuck-after"
              : "single tasks, newest first, updated live"}
        </span>
        {(filters.fingerprint || filters.name) && <span className="spacer" />}
        {filters.name && (
          <Link to={`/registry/${encodeURIComponent(filters.name)}`} title="Trends, heatmaps and failures of this name">
            About {filters.name}
          </Link>
        )}
        {filters.fingerprint && <Link to="/failures">All failures</Link>}
      </div>
      {filters.fingerprint && first?.exception && (
        <div className="exception mono" data-testid="cluster-title">
          {first.exception}
        </div>
      )}
      <form className="filters" onSubmit={(e) => apply(draft, e)} aria-label="Filter tasks">
        <label className="grow">
          <span>Search</span>
          <input
            type="search"
            value={draft.q}
            onChange={(e) => setDraft({ ...draft, q: e.target.value })}
            placeholder={SEARCH_HINT}
            data-testid="tasks-q"
          />
        </label>
        <StateField
          value={draft.state}
          states={TASK_STATES}
          onChange={(state) => apply({ ...draft, state })}
          testId="tasks-state"
        />
        <TaskNameField value={draft.name} onChange={(name) => setDraft({ ...draft, name })} />
        <label className="checkfilter">
          <span>Stuck</span>
          <input
            type="checkbox"
            checked={draft.stuck === "true"}
            onChange={(e) => apply({ ...draft, stuck: e.target.checked ? "true" : "" })}
            data-testid="tasks-stuck"
          />
        </label>
        <div className="filter-actions">
          <button type="submit" className="btn primary">
            Apply
          </button>
          {active && (
            <button type="button" className="btn" onClick={() => apply(NONE)}>
              Clear
            </button>
          )}
        </div>
      </form>
      {(filters.fingerprint || filters.q || filters.worker || filters.queue || filters.since || filters.until) && (
        <div className="activefilters">
          {(["worker", "queue", "since", "until"] as const).map(
            (k) =>
              filters[k] && (
                <span key={k} className="pill" data-testid={`filter-${k}`}>
                  {k}{" "}
                  <span className="mono">
                    {k === "since" || k === "until" ? fmtTime(Number(filters[k])) : filters[k]}
                  </span>
                  <button
                    type="button"
                    className="pill-x"
                    aria-label={`Remove the ${k} filter`}
                    onClick={() => apply({ ...filters, [k]: "" })}
                  >
                    ✕
                  </button>
                </span>
              ),
          )}
          {filters.fingerprint && (
            <span className="pill">
              cluster <span className="mono">{shortId(filters.fingerprint)}</span>
              <button
                type="button"
                className="pill-x"
                aria-label="Remove the cluster filter"
                onClick={() => apply({ ...filters, fingerprint: "" })}
              >
                ✕
              </button>
            </span>
          )}
          {filters.q && (
            <Link to={withQuery("/flows", { q: filters.q })} className="sub">
              flows matching “{filters.q}” instead
            </Link>
          )}
        </div>
      )}
      {error && <ErrorBox error={error} what="tasks" />}
      {!data && !error && isLoading && <Loading what="Loading tasks" />}
      {data && data.items.length === 0 && (
        <Empty>{active || cursor ? "No task matches these filters." : "No tasks recorded yet."}</Empty>
      )}
      {data && data.items.length > 0 && (
        <div className="tablewrap">
          <TaskTable items={data.items} now={now} />
        </div>
      )}
      <Pager
        key={fkey}
        cursor={cursor}
        next={data?.next_cursor}
        go={(c) => {
          navigate(withQuery("/tasks", { ...filters, cursor: c }));
        }}
      />
    </div>
  );
}
