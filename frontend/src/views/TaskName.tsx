// /registry/<name>: one task name over a window: runtime and queue-wait heatmaps, p50/p95 and runs over
// time, the regression flag, its failure causes, its recent runs, its signature and docstring.
import { useQuery } from "@tanstack/react-query";
import { useMemo } from "react";
import { api } from "../api/client";
import { keys, registryQuery } from "../api/queries";
import type { HeatmapMetric, NameTrend } from "../api/types";
import { HeatmapChart } from "../components/charts/Heatmap";
import { LegendItems, Lines, StackedBars } from "../components/charts/TimeCharts";
import { Empty, ErrorBox, Loading } from "../components/common";
import { ClusterTable, Figure, Panel, RegressionText } from "../components/StatsParts";
import { useWindow, WindowPicker } from "../components/WindowPicker";
import { fmtPer, fmtSeconds, pct } from "../format";
import { useDocumentTitle, useNow } from "../hooks";
import { useLiveInvalidate } from "../live";
import { Link, useNavigate, withQuery } from "../router";
import { TaskTable } from "./Tasks";

const RECENT = 15;

function NameHeatmap({
  name,
  metric,
  since,
  win,
}: {
  name: string;
  metric: HeatmapMetric;
  since: () => number;
  win: string;
}) {
  const { data, error } = useQuery({
    queryKey: keys.stats("heatmap", name, metric, win),
    queryFn: ({ signal }) => api.heatmap({ name, metric, since: since() }, signal),
    refetchInterval: 30_000,
  });
  if (error) return <ErrorBox error={error} what="the heatmap" />;
  if (!data) return <Loading what="Loading heatmap" />;
  return <HeatmapChart heatmap={data} testId={`heatmap-${metric}`} />;
}

function Latency({ t }: { t: NameTrend }) {
  const series = useMemo(
    () => [
      { label: "p50", color: "--run", values: t.p50 },
      { label: "p95", color: "--crit", values: t.p95, dash: true },
    ],
    [t.p50, t.p95],
  );
  return (
    <>
      <Lines
        edges={t.time_edges}
        series={series}
        yLabel="runtime"
        format={fmtSeconds}
        yMin={0}
        label="p50 and p95 runtime over time"
        testId="chart-latency"
      />
      <LegendItems series={series} />
    </>
  );
}

function Runs({ t }: { t: NameTrend }) {
  const series = useMemo(
    () => [
      {
        label: "finished, not failed",
        color: "SUCCESS",
        values: t.runs.map((r, i) => Math.max(0, r - (t.failures[i] ?? 0))),
      },
      { label: "failed", color: "FAILURE", values: t.failures },
    ],
    [t.runs, t.failures],
  );
  const step = t.time_edges.length > 1 ? t.time_edges[1] - t.time_edges[0] : 0;
  return (
    <>
      <StackedBars
        edges={t.time_edges}
        series={series}
        yLabel={`runs ${fmtPer(step)}`}
        label="runs over time"
        testId="chart-runs"
      />
      <LegendItems series={series} />
    </>
  );
}

export default function TaskNameView({ name }: { name: string }) {
  useDocumentTitle(name);
  const navigate = useNavigate();
  const win = useWindow();
  const now = useNow(5000);
  const since = () => Date.now() / 1000 - win[2];
  const trend = useQuery({
    queryKey: keys.stats("name", name, win[0]),
    queryFn: ({ signal }) => api.nameTrend(name, { since: since() }, signal),
    refetchInterval: 30_000,
  });
  const failures = useQuery({
    queryKey: keys.failures({ window: win[0], name }),
    queryFn: ({ signal }) => api.failures({ since: since(), name }, signal),
  });
  const recentQuery = { name, limit: RECENT };
  const recent = useQuery({
    queryKey: keys.tasks(recentQuery),
    queryFn: ({ signal }) => api.tasks(recentQuery, signal),
  });
  const registry = useQuery(registryQuery());
  useLiveInvalidate(keys.stats(), undefined, 10_000);
  useLiveInvalidate(keys.tasks(recentQuery), (items) => items.some((t) => t.name === name), 1000);
  const entry = registry.data?.find((r) => r.name === name);
  const t = trend.data;
  const runs = t ? t.runs.reduce((a, b) => a + b, 0) : 0;
  const failed = t ? t.failures.reduce((a, b) => a + b, 0) : 0;

  return (
    <div className="page" data-testid="name-page" data-name={name}>
      <div className="pagehead">
        <h1 className="mono name-title">{name}</h1>
        {t?.regression && (
          <span
            className="badge regressed"
            data-testid="regression-badge"
            title="p95 of the last window ≥ 1.5 × the window before"
          >
            slower
          </span>
        )}
        <span className="spacer" />
        <Link to={withQuery("/flows", { name })} className="sub" title="Flows with a task of this name">
          Flows
        </Link>
        <Link to="/registry" className="sub">
          All task names
        </Link>
        <WindowPicker
          value={win[0]}
          onPick={(k) => {
            navigate(withQuery(`/registry/${encodeURIComponent(name)}`, { window: k === "24h" ? "" : k }));
          }}
          what="This task name"
        />
      </div>
      {entry?.signature || entry?.doc ? (
        <div className="namedoc" data-testid="name-doc">
          {entry.signature && (
            <code className="sig-full" data-testid="name-signature">
              {name.slice(name.lastIndexOf(".") + 1)}
              {entry.signature}
            </code>
          )}
          {entry.doc && <pre className="docstring">{entry.doc}</pre>}
        </div>
      ) : null}
      {trend.error && <ErrorBox error={trend.error} what={`the trend of ${name}`} />}
      {t && (
        <div className="cards">
          <Figure
            label="Runs"
            value={runs.toLocaleString()}
            sub={`in the last ${win[1]}`}
            to={withQuery("/tasks", { name })}
            title="This name's tasks"
            testId="fig-runs"
          />
          <Figure
            label="Failed"
            value={failed.toLocaleString()}
            sub={runs ? pct(failed / runs) : undefined}
            to={withQuery("/tasks", { name, state: "FAILURE" })}
            title="This name's failed tasks"
            tone={failed ? "bad" : undefined}
            testId="fig-name-failed"
          />
          <Figure
            label="p95 runtime"
            value={fmtSeconds(entry?.p95)}
            sub={`p50 ${fmtSeconds(entry?.p50)}, all recorded runs`}
            to={withQuery("/tasks", { name, state: "SUCCESS" })}
            title="Runtime percentiles over every recorded run"
          />
          {t.regression ? (
            <Figure
              label="Regression"
              value={`×${t.regression.ratio.toFixed(1)} slower`}
              sub={<RegressionText r={t.regression} ratio={false} />}
              to={withQuery("/tasks", { name })}
              title="p95 of the last window ≥ 1.5 × the window before, 20 runs or more in each"
              tone="bad"
              testId="fig-regression"
            />
          ) : (
            <Figure
              label="Regression"
              value="none"
              sub="p95 steady"
              to={withQuery("/tasks", { name })}
              title="No regression: p95 of the last window is under 1.5 × the window before"
              testId="fig-regression"
            />
          )}
        </div>
      )}
      <div className="panels">
        <Panel title="Runtime" note="started to finished" testId="panel-runtime">
          <NameHeatmap name={name} metric="runtime" since={since} win={win[0]} />
        </Panel>
        <Panel title="Queue wait" note="sent to started" testId="panel-queue-wait">
          <NameHeatmap name={name} metric="queue_wait" since={since} win={win[0]} />
        </Panel>
        <Panel title="p50 / p95 runtime" note="per time bucket" testId="panel-latency">
          {t ? <Latency t={t} /> : !trend.error && <Loading what="Loading trend" />}
        </Panel>
        <Panel title="Runs" note="per time bucket" testId="panel-runs">
          {t ? <Runs t={t} /> : !trend.error && <Loading what="Loading trend" />}
        </Panel>
        <Panel
          title="Failure causes"
          right={
            <Link to={withQuery("/failures", { name, window: win[0] === "24h" ? "" : win[0] })}>On the Failures page</Link>
          }
          testId="panel-name-failures"
        >
          {failures.error && <ErrorBox error={failures.error} what="failures" />}
          {failures.data && (
            <ClusterTable clusters={failures.data.items} now={now} empty={`No failures in the last ${win[1]}.`} />
          )}
        </Panel>
        <Panel
          title="Recent runs"
          right={<Link to={withQuery("/tasks", { name })}>All runs</Link>}
          testId="panel-recent"
          wide
        >
          {recent.error && <ErrorBox error={recent.error} what="recent runs" />}
          {recent.data && recent.data.items.length === 0 && <Empty>No run recorded.</Empty>}
          {recent.data && recent.data.items.length > 0 && <TaskTable items={recent.data.items} now={now} />}
        </Panel>
      </div>
    </div>
  );
}
