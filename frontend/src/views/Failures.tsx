// /failures: failed tasks grouped by cause (exception type and traceback frames), biggest cluster first,
// over a window; each cluster opens to its tasks (/tasks?fingerprint=).
import { useQuery } from "@tanstack/react-query";
import { type FormEvent } from "react";
import { api } from "../api/client";
import { keys } from "../api/queries";
import type { FailureCluster } from "../api/types";
import { Empty, ErrorBox, Loading, TaskNameField } from "../components/common";
import { Sparkline } from "../components/Sparkline";
import { useWindow, WindowPicker, WINDOWS } from "../components/WindowPicker";
import { fmtAgo, fmtIso, shortId, shortName } from "../format";
import { useDocumentTitle, useDraft, useNow } from "../hooks";
import { useLiveInvalidate } from "../live";
import { Link, useNavigate, useSearchParams, withQuery } from "../router";

const FAILURE_WINDOWS = [...WINDOWS, ["30d", "30 days", 30 * 86400] as const];
const DEFAULT_WINDOW = "24h";

const FAILED = new Set(["FAILURE", "RETRY", "LOST", "REJECTED", "REVOKED"]);

function clusterTasks(c: FailureCluster): string {
  return withQuery("/tasks", { fingerprint: c.fingerprint });
}

function ClusterRow({ c, now }: { c: FailureCluster; now: number }) {
  const navigate = useNavigate();
  const to = clusterTasks(c);
  const newest = c.sample_task_ids[0];
  return (
    <tr
      className="clickrow"
      data-fingerprint={c.fingerprint}
      onClick={(e) => {
        if ((e.target as HTMLElement).closest("a,button")) return;
        navigate(to);
      }}
    >
      <td className="causecell">
        <Link to={to} className="exc-type-title mono" title={`cluster ${c.fingerprint}`}>
          {c.exception_type}
        </Link>
        <div className="cause-msg mono" title={c.message}>
          {c.message}
        </div>
      </td>
      <td className="num">
        <Link to={to} className="bigcount" title={`Open the ${c.count} failed tasks of this cluster`}>
          {c.count.toLocaleString()}
        </Link>
      </td>
      <td className="num">
        {c.retries > 0 ? (
          <span title={`${c.retries} retry attempts had this cause`}>{c.retries.toLocaleString()}</span>
        ) : (
          <span className="muted">0</span>
        )}
      </td>
      <td>
        <Sparkline start={c.sparkline.start} step={c.sparkline.step} counts={c.sparkline.counts} />
      </td>
      <td className="namescell">
        {c.task_names.slice(0, 4).map((n) => (
          <Link key={n} to={`/registry/${encodeURIComponent(n)}`} className="pill mono" title={n}>
            {shortName(n)}
          </Link>
        ))}
        {c.task_names.length > 4 && <span className="sub">+{c.task_names.length - 4}</span>}
      </td>
      <td title={fmtIso(c.first_seen)}>{fmtAgo(c.first_seen, now)}</td>
      <td title={fmtIso(c.last_seen)}>
        {fmtAgo(c.last_seen, now)}
        {newest && (
          <div className="sub">
            newest{" "}
            <Link to={`/tasks/${encodeURIComponent(newest)}`} className="mono" title={newest}>
              {shortId(newest)}
            </Link>
          </div>
        )}
      </td>
    </tr>
  );
}

export default function FailuresView() {
  useDocumentTitle("Failures");
  const navigate = useNavigate();
  const [search] = useSearchParams();
  const win = useWindow(FAILURE_WINDOWS, DEFAULT_WINDOW);
  const filters = { window: win[0], name: search.get("name") ?? "" };
  const [draft, setDraft] = useDraft(filters);
  const now = useNow(5000);
  const { data, error, isLoading } = useQuery({
    queryKey: keys.failures(filters),
    queryFn: ({ signal }) => api.failures({ since: Date.now() / 1000 - win[2], name: filters.name }, signal),
  });
  useLiveInvalidate(keys.failures(), (items) => items.some((t) => FAILED.has(t.state)), 3000);

  const apply = (f: typeof filters, e?: FormEvent) => {
    e?.preventDefault();
    navigate(withQuery("/failures", { window: f.window === DEFAULT_WINDOW ? "" : f.window, name: f.name }));
  };
  const items = data?.items ?? [];
  const failed = items.reduce((a, c) => a + c.count, 0);

  return (
    <div className="page">
      <div className="pagehead">
        <h1>Failures</h1>
        <span className="muted">
          failed tasks grouped by cause: the exception type and the traceback&apos;s frames, numbers and ids in the
          message left out
        </span>
      </div>
      <form className="filters" onSubmit={(e) => apply(draft, e)} aria-label="Filter failures">
        <div className="fgroup">
          <span>Window</span>
          <WindowPicker
            windows={FAILURE_WINDOWS}
            value={filters.window}
            onPick={(k) => apply({ ...draft, window: k })}
            what="Failures"
          />
        </div>
        <TaskNameField value={draft.name} onChange={(name) => setDraft({ ...draft, name })} testId="failures-name" />
        <div className="filter-actions">
          <button type="submit" className="btn primary">
            Apply
          </button>
          {filters.name && (
            <button type="button" className="btn" onClick={() => apply({ ...filters, name: "" })}>
              Clear
            </button>
          )}
        </div>
        {data && (
          <span className="muted filters-note">
            {items.length.toLocaleString()} {items.length === 1 ? "cause" : "causes"}, {failed.toLocaleString()} failed{" "}
            {failed === 1 ? "task" : "tasks"} in the last {win[1]}
          </span>
        )}
      </form>
      {error && <ErrorBox error={error} what="failures" />}
      {!data && !error && isLoading && <Loading what="Loading failures" />}
      {data && items.length === 0 && (
        <Empty>
          No failures in the last {win[1]}
          {filters.name ? ` for ${filters.name}` : ""}.
        </Empty>
      )}
      {items.length > 0 && (
        <div className="tablewrap">
          <table className="table failures" data-testid="failures-table">
            <thead>
              <tr>
                <th>Cause</th>
                <th className="num">Failed</th>
                <th className="num">Retries</th>
                <th>Over time</th>
                <th>Tasks</th>
                <th>First seen</th>
                <th>Last seen</th>
              </tr>
            </thead>
            <tbody>
              {items.map((c) => (
                <ClusterRow key={c.fingerprint} c={c} now={now} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
