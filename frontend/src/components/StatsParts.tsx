// Pieces the Overview and a task name's page share: a titled panel, a figure that links to the tasks
// behind it, failure clusters as a compact table, and a regression said in words.
import type { ReactNode } from "react";
import type { FailureCluster, Regression } from "../api/types";
import { fmtAgo, fmtIso, fmtSeconds, shortName } from "../format";
import { Link, withQuery } from "../router";
import { Empty } from "./common";
import { Sparkline } from "./Sparkline";

export function Panel({
  title,
  note,
  right,
  children,
  testId,
  wide,
}: {
  title: string;
  note?: ReactNode;
  right?: ReactNode;
  children: ReactNode;
  testId?: string;
  wide?: boolean;
}) {
  return (
    <section className={wide ? "panel wide" : "panel"} data-testid={testId} aria-label={title}>
      <div className="panel-head">
        <h2>{title}</h2>
        {note && <span className="muted">{note}</span>}
        {right && <span className="panel-right">{right}</span>}
      </div>
      {children}
    </section>
  );
}

/** A headline number that opens the tasks behind it. */
export function Figure({
  label,
  value,
  to,
  title,
  sub,
  tone,
  testId,
}: {
  label: string;
  value: ReactNode;
  to: string;
  title: string;
  sub?: ReactNode;
  tone?: "bad" | "warn";
  testId?: string;
}) {
  return (
    <Link to={to} className={`card cardlink ${tone ?? ""}`} title={title} data-testid={testId}>
      <div className="k">{label}</div>
      <div className="v">{value}</div>
      {sub && <div className="sub">{sub}</div>}
    </Link>
  );
}

export const clusterTasks = (c: FailureCluster) => withQuery("/tasks", { fingerprint: c.fingerprint });

export function ClusterTable({ clusters, now, empty }: { clusters: FailureCluster[]; now: number; empty: string }) {
  if (clusters.length === 0) return <Empty>{empty}</Empty>;
  return (
    <table className="table compact failures" data-testid="cluster-table">
      <thead>
        <tr>
          <th>Cause</th>
          <th className="num">Failed</th>
          <th>Over time</th>
          <th>Last seen</th>
        </tr>
      </thead>
      <tbody>
        {clusters.map((c) => (
          <tr key={c.fingerprint} data-fingerprint={c.fingerprint}>
            <td className="causecell">
              <Link to={clusterTasks(c)} className="exc-type-title mono" title={`cluster ${c.fingerprint}`}>
                {c.exception_type}
              </Link>
              <div className="cause-msg mono" title={c.message}>
                {c.message}
              </div>
              <div className="sub">{c.task_names.slice(0, 3).map(shortName).join(", ")}</div>
            </td>
            <td className="num">
              <Link
                to={clusterTasks(c)}
                className="bigcount"
                title={`Open the ${c.count} failed tasks of this cluster`}
              >
                {c.count.toLocaleString()}
              </Link>
            </td>
            <td>
              <Sparkline start={c.sparkline.start} step={c.sparkline.step} counts={c.sparkline.counts} />
            </td>
            <td title={fmtIso(c.last_seen)}>{fmtAgo(c.last_seen, now)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** "p95 120 ms → 410 ms (×3.4)" with the runs each figure comes from in its title. */
export function RegressionText({ r, ratio = true }: { r: Regression; ratio?: boolean }) {
  return (
    <span
      className="regression"
      title={`p95 of the last window (${r.runs_after} runs) against the window before (${r.runs_before} runs)`}
    >
      p95 {fmtSeconds(r.p95_before)} → <strong>{fmtSeconds(r.p95_after)}</strong>
      {ratio && ` (×${r.ratio.toFixed(1)})`}
    </span>
  );
}

/** A task name linking to its own page. */
export function NameLink({ name, short }: { name: string; short?: boolean }) {
  return (
    <Link to={`/registry/${encodeURIComponent(name)}`} className="flowname mono" title={name}>
      {short ? shortName(name) : name}
    </Link>
  );
}
