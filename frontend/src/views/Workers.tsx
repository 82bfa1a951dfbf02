// /workers: workers seen, online or offline, with their last heartbeat and how many tasks they ran.
import { useQuery } from "@tanstack/react-query";
import { workersQuery } from "../api/queries";
import { Empty, ErrorBox, Loading } from "../components/common";
import { fmtAgo, fmtIso, fmtTime } from "../format";
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
                <th>Last heartbeat</th>
                <th>Online since</th>
                <th className="num">Tasks run</th>
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
                    </td>
                    <td>
                      <span className="mono flowname">{w.hostname}</span>
                      {w.pid ? <div className="sub">pid {w.pid}</div> : null}
                    </td>
                    <td title={fmtIso(w.last_heartbeat)}>
                      {fmtAgo(w.last_heartbeat, now)}
                      <div className="sub">{fmtTime(w.last_heartbeat)}</div>
                    </td>
                    <td title={fmtIso(w.online_since)}>{w.online_since ? fmtTime(w.online_since) : "–"}</td>
                    <td className="num">
                      <Link to={withQuery("/", { worker: w.hostname })} title="Flows with tasks run on this worker">
                        {(w.tasks_run ?? 0).toLocaleString()}
                      </Link>
                    </td>
                    <td>
                      {(w.registered ?? []).slice(0, 6).map((r) => (
                        <span key={r} className="pill mono">
                          {r}
                        </span>
                      ))}
                      {(w.registered?.length ?? 0) > 6 && (
                        <span className="muted">+{w.registered!.length - 6} more</span>
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
