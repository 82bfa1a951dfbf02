// /: the landing page. How the tasks went over a window (1h / 24h / 7d): throughput by final state, the
// failure rate, a runtime heatmap of every name, backlog per queue, workers, lost and stuck tasks, late beat
// schedules (when there are any), the top failure causes, the slowest names and regressions. Every figure
// opens the tasks behind it.
import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { api } from "../api/client";
import { keys } from "../api/queries";
import type { Overview } from "../api/types";
import { HeatmapChart } from "../components/charts/Heatmap";
import { LegendItems, Lines, StackedBars } from "../components/charts/TimeCharts";
import { Empty, ErrorBox, Loading } from "../components/common";
import { ClusterTable, Figure, NameLink, Panel, RegressionText } from "../components/StatsParts";
import { useWindow, WindowPicker } from "../components/WindowPicker";
import { fmtPer, fmtSeconds, pct, stateWords } from "../format";
import { useDocumentTitle, useNow } from "../hooks";
import { useLiveInvalidate } from "../live";
import { Link, useNavigate, withQuery } from "../router";

/** Final states in the order they stack, success at the bottom. */
const FINAL = ["SUCCESS", "FAILURE", "REVOKED", "REJECTED", "LOST"];

const pctAxis = (v: number) => `${+(v * 100).toFixed(1)}%`;

/** The overview's window as the Tasks page's `since`/`until`, so a figure opens the tasks behind it. */
function windowOf(o: Overview): { since: string; until: string } {
  return { since: String(Math.floor(o.since)), until: String(Math.ceil(o.until)) };
}

function Throughput({ o }: { o: Overview }) {
  const states = useMemo(
    // Success and failure always, other states when some task ended so.
    () =>
      [...FINAL, ...Object.keys(o.throughput).filter((s) => !FINAL.includes(s))].filter(
        (s) => o.throughput[s] && (s === "SUCCESS" || s === "FAILURE" || o.throughput[s].some(Boolean)),
      ),
    [o.throughput],
  );
  const series = useMemo(
    () => states.map((s) => ({ label: stateWords(s), color: s, values: o.throughput[s] })),
    [states, o.throughput],
  );
  const step = o.time_edges.length > 1 ? o.time_edges[1] - o.time_edges[0] : 0;
  const sums = Object.fromEntries(states.map((s) => [s, o.throughput[s].reduce((a, b) => a + b, 0)]));
  return (
    <>
      <StackedBars
        edges={o.time_edges}
        series={series}
        yLabel={`tasks ${fmtPer(step)}`}
        label={`${o.finished} tasks finished`}
        testId="chart-throughput"
      />
      <LegendItems
        series={states.map((s) => ({
          label: s,
          color: s,
          extra: (
            <Link
              to={withQuery("/tasks", { state: s, ...windowOf(o) })}
              title={`The ${stateWords(s)} tasks`}
              data-testid={`legend-${s}`}
            >
              {sums[s].toLocaleString()} {stateWords(s)}
            </Link>
          ),
        }))}
      />
    </>
  );
}

function FailureRate({ o }: { o: Overview }) {
  const series = useMemo(
    () => [{ label: "failure rate", color: "FAILURE", values: o.failure_rates }],
    [o.failure_rates],
  );
  return (
    <Lines
      edges={o.time_edges}
      series={series}
      yLabel="failed / finished"
      format={pctAxis}
      yMin={0}
      label={`failure rate ${pct(o.failure_rate)}`}
      testId="chart-failure-rate"
    />
  );
}

export default function OverviewView() {
  useDocumentTitle("Overview");
  const navigate = useNavigate();
  const win = useWindow();
  const now = useNow(5000);
  const { data: o, error } = useQuery({
    queryKey: keys.stats("overview", win[0]),
    queryFn: ({ signal }) => api.overview({ since: Date.now() / 1000 - win[2] }, signal),
    refetchInterval: 30_000,
  });
  const heat = useQuery({
    queryKey: keys.stats("heatmap", "", "runtime", win[0]),
    queryFn: ({ signal }) => api.heatmap({ metric: "runtime", since: Date.now() / 1000 - win[2] }, signal),
    refetchInterval: 30_000,
  });
  useLiveInvalidate(keys.stats(), undefined, 10_000);
  const backlog = (o?.backlog ?? []).reduce((a, q) => a + q.waiting, 0);

  return (
    <div className="page overview" data-testid="overview">
      <div className="pagehead">
        <h1>Overview</h1>
        <span className="muted">how the tasks went over the last {win[1]}</span>
        <span className="spacer" />
        <Link to="/flows" className="sub">
          All flows →
        </Link>
        <WindowPicker
          value={win[0]}
          onPick={(k) => {
            navigate(withQuery("/", { window: k === "24h" ? "" : k }));
          }}
          what="The overview"
        />
      </div>
      {error && <ErrorBox error={error} what="the overview" />}
      {!o && !error && <Loading what="Loading overview" />}
      {o && (
        <>
          <div className="cards">
            <Figure
              label="Finished"
              value={o.finished.toLocaleString()}
              to={withQuery("/tasks", windowOf(o))}
              title="Tasks that reached a final state in the window; opens the tasks of the window"
              testId="fig-finished"
            />
            <Figure
              label="Failure rate"
              value={pct(o.failure_rate)}
              sub={`${o.failed.toLocaleString()} failed`}
              to={withQuery("/tasks", { state: "FAILURE", ...windowOf(o) })}
              title="Failed tasks out of the finished ones (revoked, rejected and lost are counted apart); opens them"
              tone={o.failed ? "bad" : undefined}
              testId="fig-failed"
            />
            <Figure
              label="Backlog"
              value={backlog.toLocaleString()}
              sub={`${o.backlog.length} ${o.backlog.length === 1 ? "queue" : "queues"}`}
              to={withQuery("/tasks", { state: "PENDING" })}
              title="Tasks sent and not yet received by a worker, now"
              tone={backlog ? "warn" : undefined}
              testId="fig-backlog"
            />
            <Figure
              label="Workers online"
              value={o.workers_online.toLocaleString()}
              sub={o.workers_offline ? `${o.workers_offline} offline` : undefined}
              to="/workers"
              title="Workers heard from recently"
              testId="fig-workers"
            />
            <Figure
              label="Lost"
              value={o.lost.toLocaleString()}
              to={withQuery("/tasks", { state: "LOST", ...windowOf(o) })}
              title="Tasks whose worker went away while they ran, in the window"
              tone={o.lost ? "bad" : undefined}
              testId="fig-lost"
            />
            <Figure
              label="Stuck"
              value={o.stuck.toLocaleString()}
              sub="now"
              to={withQuery("/tasks", { stuck: "true" })}
              title="Running far longer than their name's own history, now"
              tone={o.stuck ? "warn" : undefined}
              testId="fig-stuck"
            />
            {o.schedules > 0 && (
              <Figure
                label="Schedules late"
                value={o.schedules_late.toLocaleString()}
                sub={o.beat_down ? "beat is down" : `${o.schedules_missed.toLocaleString()} runs missed`}
                to="/schedules"
                title={`Beat schedule entries whose next run is overdue, now, of ${o.schedules}; runs missed since each was first seen`}
                tone={o.beat_down || o.schedules_late ? "bad" : o.schedules_missed ? "warn" : undefined}
                testId="fig-schedules"
              />
            )}
          </div>
          <div className="panels">
            <Panel title="Throughput" note="tasks finished, by final state" testId="panel-throughput">
              {o.finished ? <Throughput o={o} /> : <Empty>No task finished in the last {win[1]}.</Empty>}
            </Panel>
            <Panel title="Failure rate" note={`${pct(o.failure_rate)} over the window`} testId="panel-failure-rate">
              {o.finished ? <FailureRate o={o} /> : <Empty>No task finished in the last {win[1]}.</Empty>}
            </Panel>
            <Panel
              title="Runtime, every task"
              note="tasks per time and runtime bucket; hover a cell"
              testId="panel-heatmap"
              wide
            >
              {heat.error && <ErrorBox error={heat.error} what="the heatmap" />}
              {heat.data && <HeatmapChart heatmap={heat.data} testId="heatmap-runtime" />}
            </Panel>
            <Panel title="Backlog per queue" note="sent, not yet received by a worker" testId="panel-backlog">
              {o.backlog.length === 0 ? (
                <Empty>No task waiting.</Empty>
              ) : (
                <table className="table compact" data-testid="backlog-table">
                  <thead>
                    <tr>
                      <th>Queue</th>
                      <th className="num">Waiting</th>
                    </tr>
                  </thead>
                  <tbody>
                    {o.backlog.map((q) => (
                      <tr key={q.queue} data-queue={q.queue}>
                        <td className="mono">{q.queue}</td>
                        <td className="num">
                          <Link
                            to={withQuery("/tasks", { queue: q.queue, state: "PENDING" })}
                            title={`The tasks waiting in ${q.queue}`}
                          >
                            {q.waiting.toLocaleString()}
                          </Link>
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </Panel>
            <Panel
              title="Top failures"
              note="biggest causes in the window"
              right={<Link to={withQuery("/failures", { window: win[0] === "24h" ? "" : win[0] })}>All failures</Link>}
              testId="panel-failures"
            >
              <ClusterTable clusters={o.top_failures} now={now} empty="No failures in the window." />
            </Panel>
            <Panel title="Slowest names" note="by p95 runtime in the window" testId="panel-slowest">
              {o.slowest.length === 0 ? (
                <Empty>No finished task in the window.</Empty>
              ) : (
                <table className="table compact" data-testid="slowest-table">
                  <thead>
                    <tr>
                      <th>Task</th>
                      <th className="num">Runs</th>
                      <th className="num">p50</th>
                      <th className="num">p95</th>
                    </tr>
                  </thead>
                  <tbody>
                    {o.slowest.map((s) => (
                      <tr key={s.name} data-name={s.name}>
                        <td className="namecell">
                          <NameLink name={s.name} />
                        </td>
                        <td className="num">
                          <Link to={withQuery("/tasks", { name: s.name })} title={`The runs of ${s.name}`}>
                            {s.runs.toLocaleString()}
                          </Link>
                        </td>
                        <td className="num">{fmtSeconds(s.p50)}</td>
                        <td className="num">{fmtSeconds(s.p95)}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </Panel>
            <Panel
              title="Regressions"
              note="p95 of the last window ≥ 1.5 × the window before"
              testId="panel-regressions"
            >
              {o.regressions.length === 0 ? (
                <Empty>No name got slower.</Empty>
              ) : (
                <table className="table compact" data-testid="regressions-table">
                  <tbody>
                    {o.regressions.map((r) => (
                      <tr key={r.name} data-name={r.name}>
                        <td className="namecell">
                          <NameLink name={r.name} />
                        </td>
                        <td>
                          <RegressionText r={r} />
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </Panel>
          </div>
        </>
      )}
    </div>
  );
}
