import { useQuery } from "@tanstack/react-query";
import { type FormEvent } from "react";
import { api } from "../api/client";
import { keys } from "../api/queries";
import { FLOW_STATES, type FlowSummary } from "../api/types";
import {
  CountsBar,
  Empty,
  ErrorBox,
  Loading,
  Pager,
  SEARCH_HINT,
  StateChip,
  StateField,
  TaskNameField,
} from "../components/common";
import { fmtAgo, fmtDuration, fmtIso, fmtTime, shortId, shortName } from "../format";
import { useDocumentTitle, useDraft, useNow } from "../hooks";
import { useLiveInvalidate } from "../live";
import { Link, useNavigate, useSearchParams, withQuery } from "../router";

const RANGES: [string, string, number | null][] = [
  ["", "Any time", null],
  ["15m", "Last 15 min", 900],
  ["1h", "Last hour", 3600],
  ["6h", "Last 6 hours", 6 * 3600],
  ["24h", "Last 24 hours", 86400],
  ["7d", "Last 7 days", 7 * 86400],
  ["custom", "Between…", null],
];

/** `datetime-local` value (local time) <-> epoch seconds, for the custom time range. */
const pad2 = (n: number) => String(n).padStart(2, "0");
function toLocalInput(epoch: string): string {
  if (!epoch) return "";
  const d = new Date(Number(epoch) * 1000);
  if (Number.isNaN(d.getTime())) return "";
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}
function fromLocalInput(value: string): string {
  if (!value) return "";
  const t = new Date(value).getTime();
  return Number.isNaN(t) ? "" : String(Math.floor(t / 1000));
}
const PAGE = 50;

interface Filters extends Record<string, string> {
  state: string;
  name: string;
  range: string;
  trace_id: string;
  q: string;
  worker: string;
  since: string;
  until: string;
}

function readFilters(s: URLSearchParams): Filters {
  return {
    state: s.get("state") ?? "",
    name: s.get("name") ?? "",
    range: s.get("range") ?? "",
    trace_id: s.get("trace_id") ?? "",
    worker: s.get("worker") ?? "",
    q: s.get("q") ?? "",
    since: s.get("since") ?? "",
    until: s.get("until") ?? "",
  };
}

function FlowRow({ f, now }: { f: FlowSummary; now: number }) {
  const navigate = useNavigate();
  const running = f.finished_at === null && f.started_at !== null;
  const duration = running && f.started_at !== null ? now - f.started_at : f.duration;
  const to = `/flows/${encodeURIComponent(f.root_id)}`;
  return (
    <tr
      className="clickrow"
      data-root-id={f.root_id}
      data-state={f.state}
      onClick={(e) => {
        if ((e.target as HTMLElement).closest("a,button")) return;
        navigate(to);
      }}
    >
      <td>
        <StateChip state={f.state} />
      </td>
      <td className="namecell">
        <Link to={to} className="flowname" title={f.root_name ?? undefined}>
          {shortName(f.root_name)}
        </Link>
        <div className="sub mono" title={f.root_id}>
          {f.root_name && f.root_name !== shortName(f.root_name) ? `${f.root_name} · ` : ""}
          {shortId(f.root_id)}
        </div>
      </td>
      <td className="countscell">
        <CountsBar counts={f.counts} total={f.task_count} />
      </td>
      <td className="num">
        {running && (duration ?? 0) < 1 ? "<1 s" : fmtDuration(duration)}
        {running && <span className="sub"> {f.state === "PENDING" ? "queued" : "running"}</span>}
      </td>
      <td title={fmtIso(f.started_at)}>
        {fmtTime(f.started_at)}
        <div className="sub">{fmtAgo(f.started_at, now)}</div>
      </td>
      <td>
        {f.trace_id ? (
          <Link to={`/traces/${encodeURIComponent(f.trace_id)}`} className="mono" title={f.trace_id}>
            {shortId(f.trace_id)}
          </Link>
        ) : (
          <span className="muted">–</span>
        )}
      </td>
    </tr>
  );
}

export function FlowsView() {
  const navigate = useNavigate();
  const [search] = useSearchParams();
  const filters = readFilters(search);
  const cursor = search.get("cursor") ?? "";
  const [draft, setDraft] = useDraft<Filters>(filters);
  const now = useNow(1000);
  useDocumentTitle("Flows");

  const fkey = JSON.stringify(filters);

  const { data, error, isLoading } = useQuery({
    queryKey: keys.flows({ ...filters, cursor }),
    queryFn: ({ signal }) => {
      const range = RANGES.find((r) => r[0] === filters.range)?.[2] ?? null;
      const query = {
        state: filters.state,
        name: filters.name,
        trace_id: filters.trace_id,
        worker: filters.worker,
        q: filters.q,
        since: filters.range === "custom" ? filters.since : range ? Date.now() / 1000 - range : null,
        until: filters.range === "custom" ? filters.until : null,
        limit: PAGE,
        cursor,
      };
      return api.flows(query, signal);
    },
  });
  useLiveInvalidate(keys.flows());

  const apply = (f: Filters, e?: FormEvent) => {
    e?.preventDefault();
    navigate(withQuery("/flows", { ...f }));
  };
  const active = Object.values(filters).some(Boolean);

  return (
    <div className="page">
      <div className="pagehead">
        <h1>Flows</h1>
        <span className="muted">one row per root workflow, updated live</span>
      </div>
      <form className="filters" onSubmit={(e) => apply(draft, e)} aria-label="Filter flows">
        <StateField
          value={draft.state}
          states={FLOW_STATES}
          onChange={(state) => apply({ ...draft, state })}
          testId="filter-state"
        />
        <TaskNameField value={draft.name} onChange={(name) => setDraft({ ...draft, name })} testId="filter-name" />
        <label>
          <span>Time</span>
          <select
            value={draft.range}
            onChange={(e) =>
              e.target.value === "custom"
                ? setDraft({ ...draft, range: "custom" })
                : apply({ ...draft, range: e.target.value, since: "", until: "" })
            }
            data-testid="filter-range"
          >
            {RANGES.map(([k, label]) => (
              <option key={k} value={k}>
                {label}
              </option>
            ))}
          </select>
        </label>
        {draft.range === "custom" && (
          <>
            <label>
              <span>From</span>
              <input
                type="datetime-local"
                value={toLocalInput(draft.since)}
                onChange={(e) => setDraft({ ...draft, since: fromLocalInput(e.target.value) })}
                data-testid="filter-since"
              />
            </label>
            <label>
              <span>To</span>
              <input
                type="datetime-local"
                value={toLocalInput(draft.until)}
                onChange={(e) => setDraft({ ...draft, until: fromLocalInput(e.target.value) })}
                data-testid="filter-until"
              />
            </label>
          </>
        )}
        <label>
          <span>Trace id</span>
          <input value={draft.trace_id} onChange={(e) => setDraft({ ...draft, trace_id: e.target.value })} />
        </label>
        <label className="grow">
          <span>Text</span>
          <input
            value={draft.q}
            onChange={(e) => setDraft({ ...draft, q: e.target.value })}
            placeholder={SEARCH_HINT}
            title={`Finds flows with a task matching: ${SEARCH_HINT}`}
            data-testid="filter-q"
          />
        </label>
        <div className="filter-actions">
          <button type="submit" className="btn primary">
            Apply
          </button>
          {active && (
            <button
              type="button"
              className="btn"
              onClick={() =>
                apply({ state: "", name: "", range: "", trace_id: "", q: "", worker: "", since: "", until: "" })
              }
            >
              Clear
            </button>
          )}
        </div>
      </form>
      {filters.worker && (
        <div className="activefilters">
          <span className="pill">
            ran on <span className="mono">{filters.worker}</span>
            <button
              type="button"
              className="pill-x"
              aria-label={`Remove the worker filter ${filters.worker}`}
              onClick={() => apply({ ...filters, worker: "" })}
            >
              ✕
            </button>
          </span>
        </div>
      )}
      {error && <ErrorBox error={error} what="flows" />}
      {!data && !error && isLoading && <Loading what="Loading flows" />}
      {data && data.items.length === 0 && (
        <Empty>
          {active || cursor ? (
            "No flow matches these filters."
          ) : (
            <>
              No flows recorded yet. Call <code className="mono">celery_flow.init(app)</code> in your Celery app and run
              a task; it appears here as soon as the server stores its first event.
            </>
          )}
        </Empty>
      )}
      {data && data.items.length > 0 && (
        <div className="tablewrap">
          <table className="table flows" data-testid="flows-table">
            <thead>
              <tr>
                <th>State</th>
                <th>Workflow</th>
                <th>Tasks</th>
                <th className="num">Duration</th>
                <th>Started</th>
                <th>Trace</th>
              </tr>
            </thead>
            <tbody>
              {data.items.map((f) => (
                <FlowRow key={f.root_id} f={f} now={now} />
              ))}
            </tbody>
          </table>
        </div>
      )}
      <Pager
        key={fkey}
        cursor={cursor}
        next={data?.next_cursor}
        go={(c) => {
          navigate(withQuery("/flows", { ...filters, cursor: c }));
        }}
      />
    </div>
  );
}
