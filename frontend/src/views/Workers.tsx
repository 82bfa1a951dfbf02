// /workers: workers seen, online or offline (kept, with when they left): pool and concurrency, queues,
// tasks running now, processed and failed counts, and the heartbeat's age, ticking live.
import { useQuery } from "@tanstack/react-query";
import { workersQuery } from "../api/queries";
import { Empty, ErrorBox, Loading } from "../components/common";
import { fmtAgo, fmtIso, fmtTime, shortName } from "../format";
import { useDocumentTitle, useNow } from "../hooks";
import { useLiveRefetch } from "../live";
import { Link, withQuery } from "../router";

export function WorkersView() {
  useDocumentTitle("Workers");
  const now = useNow(1000);
  // Heartbeats are not task changes: poll too, so online/offline stays true without a reload.
  const { data, error, refetch } = useQuery({ ...workersQuery(), refetchInterval: 5000 });
  const reload = () => void refetch();
  useLiveRefetch(reload, undefined, 2000);
  const online = (data ?? []).filter((w) => w.status === "online").length;
  return (
    <div className="page">
      <div className="pagehead">
        <h1>Workers</h1>
        <span className="muted">{data ? `${online} online · ${data.length - online} offline` : ""}</span>
        <span className="spacer" />
        <button type="button" className="btn small" onClick={reload}>
          Refresh
        </button>
      </div>
      {error && <ErrorBox error={error} what="workers" />}
      {!data && !error && <Loading what="Loading workers" />}
      {data && data.length === 0 && (
        <Empty>No worker seen yet. Workers appear when a worker with celery_flow.init(app) starts.</Empty>
      )}
      {data && data.length > 0 && (
        <div className="tablewrap">
          <table className="table" data-testid="workers-table">
            <thead>
              <tr>
                <th>Status</th>
                <th>Worker</th>
                <th>Pool</th>
                <th>Queues</th>
                <th className="num">Running</th>
                <th className="num">Processed</th>
                <th className="num">Failed</th>
                <th>Last heartbeat</th>
                <th>Registered tasks</th>
              </tr>
            </thead>
            <tbody>
              {[...data]
                .sort((a, b) =>
                  a.status === b.status ? a.hostname.localeCompare(b.hostname) : a.status === "online" ? -1 : 1,
                )
                .map((w) => (
                  <tr key={w.hostname} data-hostname={w.hostname} data-status={w.status}>
                    <td>
                      <span className={`wstatus ${w.status}`}>
                        <span className="dot" aria-hidden="true" />
                        {w.status}
                      </span>
                      {w.status === "offline" && w.offline_at ? (
                        <div className="sub" title={fmtIso(w.offline_at)} data-testid="offline-at">
                          left {fmtAgo(w.offline_at, now)}
                        </div>
                      ) : w.online_since ? (
                        <div className="sub" title={fmtIso(w.online_since)}>
                          since {fmtTime(w.online_since)}
                        </div>
                      ) : null}
                    </td>
                    <td>
                      <Link
                        to={withQuery("/flows", { worker: w.hostname })}
                        className="mono flowname"
                        title="Flows with tasks run on this worker"
                      >
                        {w.hostname}
                      </Link>
                      {w.pid ? <div className="sub">pid {w.pid}</div> : null}
                    </td>
                    <td data-testid="worker-pool">
                      {w.pool ?? <span className="muted">–</span>}
                      {w.concurrency ? <div className="sub">concurrency {w.concurrency}</div> : null}
                    </td>
                    <td data-testid="worker-queues">
                      {(w.queues ?? []).map((q) => (
                        <span key={q} className="pill mono">
                          {q}
                        </span>
                      ))}
                      {(w.queues?.length ?? 0) === 0 && <span className="muted">–</span>}
                    </td>
                    <td className="num">
                      <Link
                        to={withQuery("/tasks", { worker: w.hostname, state: "STARTED" })}
                        title="Tasks running on this worker now"
                        data-testid="worker-running"
                      >
                        {w.running.toLocaleString()}
                      </Link>
                    </td>
                    <td className="num">
                      <Link to={withQuery("/tasks", { worker: w.hostname })} title="Tasks this worker ran">
                        {(w.tasks_run ?? 0).toLocaleString()}
                      </Link>
                    </td>
                    <td className="num">
                      <Link
                        to={withQuery("/tasks", { worker: w.hostname, state: "FAILURE" })}
                        title="Tasks that failed on this worker"
                        className={w.failed ? "rate-bad" : undefined}
                      >
                        {w.failed.toLocaleString()}
                      </Link>
                    </td>
                    <td title={fmtIso(w.last_heartbeat)} data-testid="heartbeat-age">
                      {fmtAgo(w.last_heartbeat, now)}
                      <div className="sub">{fmtTime(w.last_heartbeat)}</div>
                    </td>
                    <td>
                      {(w.registered ?? []).slice(0, 4).map((r) => (
                        <Link key={r} to={`/registry/${encodeURIComponent(r)}`} className="pill mono" title={r}>
                          {shortName(r)}
                        </Link>
                      ))}
                      {(w.registered?.length ?? 0) > 4 && (
                        <span className="muted">+{w.registered!.length - 4} more</span>
                      )}
                    </td>
                  </tr>
                ))}
            </tbody>
          </table>
        </div>
      )}
    </div>
  );
}
