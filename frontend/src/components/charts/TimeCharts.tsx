// Charts over time buckets (edges in epoch seconds): stacked bars of counts, and lines of values.
import { useMemo, type ReactNode } from "react";
import uPlot from "uplot";
import { fmtSpan } from "../../format";
import {
  bucketOf,
  COUNT_INCRS,
  midpoints,
  READ_CURSOR,
  timeAxis,
  tooltipPlugin,
  valueAxis,
  withAlpha,
  type Palette,
} from "./base";
import { Chart, type ChartSpec } from "./Chart";

export interface Series<V> {
  label: string;
  /** A state ("FAILURE": its --st-* colour) or a theme variable ("--accent"). */
  color: string;
  values: V[];
  dash?: boolean;
}

const colorOf = (p: Palette, c: string) => (c.startsWith("--") ? p.v(c) : p.state(c));

/** The bucket under the cursor, or -1. */
function cursorBucket(u: uPlot, edges: number[]): number {
  const left = u.cursor.left;
  if (left === undefined || left < 0) return -1;
  return bucketOf(edges, u.posToVal(left, "x"));
}

/** Counts per bucket stacked by series (e.g. tasks finished by final state); the tooltip lists each. */
export function StackedBars({
  edges,
  series,
  yLabel,
  height = 200,
  label,
  testId,
}: {
  edges: number[];
  series: Series<number>[];
  yLabel: string;
  height?: number;
  label: string;
  testId?: string;
}) {
  const total = series.reduce((a, s) => a + s.values.reduce((x, y) => x + y, 0), 0);
  const spec = useMemo<ChartSpec>(() => {
    const n = edges.length - 1;
    // uPlot draws series in order: the running sums, tallest first, each over the one before, make stacks.
    const sums: number[][] = [];
    let acc = new Array<number>(n).fill(0);
    for (const s of series) {
      acc = acc.map((a, i) => a + (s.values[i] ?? 0));
      sums.push(acc);
    }
    const order = series.map((_, k) => k).reverse();
    const max = Math.max(1, ...(sums[sums.length - 1] ?? [0]));
    return {
      data: [midpoints(edges), ...order.map((k) => sums[k])],
      options: (p) => ({
        cursor: { ...READ_CURSOR, points: { show: false } },
        legend: { show: false },
        scales: { x: { time: true, range: [edges[0], edges[n]] }, y: { range: [0, max * 1.08] } },
        axes: [timeAxis(p), valueAxis(p, yLabel, { incrs: COUNT_INCRS })],
        series: [
          {},
          ...order.map((k) => ({
            label: series[k].label,
            stroke: colorOf(p, series[k].color),
            fill: withAlpha(colorOf(p, series[k].color), 0.85),
            width: 0,
            points: { show: false },
            paths: uPlot.paths.bars?.({ align: 0, size: [0.86, 64], gap: 1 }),
          })),
        ],
        plugins: [
          tooltipPlugin((u) => {
            const i = cursorBucket(u, edges);
            if (i < 0) return null;
            const lines = series.filter((s) => s.values[i]).map((s) => `${s.label}: ${s.values[i].toLocaleString()}`);
            const sum = series.reduce((a, s) => a + (s.values[i] ?? 0), 0);
            return [fmtSpan(edges[i], edges[i + 1]), ...(lines.length ? lines : ["none"]), `total: ${sum}`].join("\n");
          }),
        ],
      }),
    };
  }, [edges, series, yLabel]);
  return <Chart spec={spec} height={height} label={label} testId={testId} attrs={{ total }} />;
}

/** Values per bucket as lines (p50/p95, a rate); a bucket without a value (null) is a gap. */
export function Lines({
  edges,
  series,
  yLabel,
  format,
  height = 200,
  label,
  testId,
  yMin,
}: {
  edges: number[];
  series: Series<number | null>[];
  yLabel: string;
  /** How a value reads on the axis and in the tooltip, unit included ("12 ms", "4%"). */
  format: (v: number) => string;
  height?: number;
  label: string;
  testId?: string;
  /** The axis starts at this value (0 for a rate); else it fits the data. */
  yMin?: number;
}) {
  const points = series.reduce((a, s) => a + s.values.filter((v) => v !== null).length, 0);
  const spec = useMemo<ChartSpec>(() => {
    const n = edges.length - 1;
    const all = series.flatMap((s) => s.values.filter((v): v is number => v !== null));
    const hi = all.length ? Math.max(...all) : 1;
    const lo = yMin ?? (all.length ? Math.min(...all) : 0);
    const pad = (hi - lo || hi || 1) * 0.1;
    // With few buckets holding a value, dots show where they are; lines alone would hide a lone value.
    const dots = points <= 2 * series.length * 12;
    return {
      data: [midpoints(edges), ...series.map((s) => s.values)],
      options: (p) => ({
        cursor: { ...READ_CURSOR },
        legend: { show: false },
        scales: {
          x: { time: true, range: [edges[0], edges[n]] },
          y: { range: [yMin ?? Math.max(0, lo - pad), hi + pad] },
        },
        axes: [
          timeAxis(p),
          valueAxis(p, yLabel, { size: 64, values: (_u: uPlot, splits: number[]) => splits.map(format) }),
        ],
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: colorOf(p, s.color),
            width: 2,
            dash: s.dash ? [6, 4] : undefined,
            spanGaps: false,
            points: { show: dots, size: 5, fill: colorOf(p, s.color) },
          })),
        ],
        plugins: [
          tooltipPlugin((u) => {
            const i = cursorBucket(u, edges);
            if (i < 0) return null;
            const lines = series.map((s) => `${s.label}: ${s.values[i] === null ? "no runs" : format(s.values[i])}`);
            return [fmtSpan(edges[i], edges[i + 1]), ...lines].join("\n");
          }),
        ],
      }),
    };
  }, [edges, series, yLabel, format, yMin, points]);
  return <Chart spec={spec} height={height} label={label} testId={testId} attrs={{ points }} />;
}

/** A legend row for a chart: a swatch and a label (or `extra`, e.g. a link) per series. */
export function LegendItems({ series }: { series: { label: string; color: string; extra?: ReactNode }[] }) {
  return (
    <div className="chart-legend">
      {series.map((s) => (
        <span key={s.label} className="lg">
          <span
            className="sw"
            style={{ background: s.color.startsWith("--") ? `var(${s.color})` : `var(--st-${s.color})` }}
          />
          {s.extra ?? s.label}
        </span>
      ))}
    </div>
  );
}
