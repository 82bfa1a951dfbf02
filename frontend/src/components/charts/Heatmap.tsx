// A duration heatmap: time buckets along x, log-spaced duration buckets up y, each cell shaded by how many
// tasks fell in it. uPlot draws the axes and the cursor; the cells are painted on its canvas in a draw hook.
import { useMemo } from "react";
import type uPlot from "uplot";
import type { Heatmap } from "../../api/types";
import { fmtSeconds, fmtSpan } from "../../format";
import { Empty } from "../common";
import { bucketOf, midpoints, READ_CURSOR, timeAxis, tooltipPlugin, valueAxis, withAlpha } from "./base";
import { Chart, type ChartSpec } from "./Chart";

const METRIC_WORDS: Record<Heatmap["metric"], string> = { runtime: "runtime", queue_wait: "queue wait" };

/** How strongly a count is shaded: on a log scale, so a few slow tasks still show beside thousands. */
const shade = (count: number, max: number) => 0.2 + 0.8 * (Math.log1p(count) / Math.log1p(max));

export function HeatmapChart({
  heatmap,
  height = 220,
  testId,
}: {
  heatmap: Heatmap;
  height?: number;
  testId?: string;
}) {
  const { time_edges: te, value_edges: ve, counts } = heatmap;
  const rows = te.length - 1;
  const cols = ve.length - 1;
  const total = counts.reduce((a, r) => a + r.reduce((x, y) => x + y, 0), 0);
  const max = Math.max(1, ...counts.map((r) => Math.max(0, ...r)));
  const spec = useMemo<ChartSpec>(() => {
    // One y unit per duration bucket: the log-spaced buckets are evenly tall, labelled with their edges.
    const every = Math.max(1, Math.ceil(cols / Math.max(2, Math.floor((height - 40) / 26))));
    const splits = Array.from({ length: cols + 1 }, (_, j) => j).filter((j) => j % every === 0);
    return {
      data: [midpoints(te), midpoints(te).map(() => null)],
      options: (p) => ({
        cursor: { ...READ_CURSOR, y: true, points: { show: false } },
        legend: { show: false },
        scales: { x: { time: true, range: [te[0], te[rows]] }, y: { auto: false, range: [0, Math.max(1, cols)] } },
        axes: [
          timeAxis(p),
          valueAxis(p, `${METRIC_WORDS[heatmap.metric]} (log scale)`, {
            size: 64,
            splits: () => splits,
            values: (_u: uPlot, s: number[]) => s.map((j) => fmtSeconds(ve[j])),
          }),
        ],
        series: [{}, { paths: () => null, points: { show: false } }],
        hooks: {
          draw: [
            (u: uPlot) => {
              const ctx = u.ctx;
              ctx.save();
              for (let i = 0; i < rows; i++) {
                const x0 = u.valToPos(te[i], "x", true);
                const x1 = u.valToPos(te[i + 1], "x", true);
                const row = counts[i] ?? [];
                for (let j = 0; j < cols; j++) {
                  const c = row[j] ?? 0;
                  if (c <= 0) continue;
                  const y0 = u.valToPos(j, "y", true);
                  const y1 = u.valToPos(j + 1, "y", true);
                  ctx.fillStyle = withAlpha(p.accent, shade(c, max));
                  // A hairline gap between cells keeps neighbours apart.
                  ctx.fillRect(x0, y1, Math.max(1, x1 - x0 - 1), Math.max(1, y0 - y1 - 1));
                }
              }
              ctx.restore();
            },
          ],
        },
        plugins: [
          tooltipPlugin((u) => {
            const i = bucketOf(te, u.posToVal(u.cursor.left ?? -1, "x"));
            const j = Math.floor(u.posToVal(u.cursor.top ?? -1, "y"));
            if (i < 0 || j < 0 || j >= cols) return null;
            const c = counts[i]?.[j] ?? 0;
            return [
              fmtSpan(te[i], te[i + 1]),
              `${METRIC_WORDS[heatmap.metric]} ${fmtSeconds(ve[j])} – ${fmtSeconds(ve[j + 1])}`,
              `${c.toLocaleString()} ${c === 1 ? "task" : "tasks"}`,
            ].join("\n");
          }),
        ],
      }),
    };
  }, [te, ve, counts, rows, cols, max, height, heatmap.metric]);
  if (total === 0)
    return (
      <Empty>
        No {METRIC_WORDS[heatmap.metric]} recorded in the window{heatmap.name ? ` for ${heatmap.name}` : ""}.
      </Empty>
    );
  return (
    <div className="heatmap">
      <Chart
        spec={spec}
        height={height}
        label={`${METRIC_WORDS[heatmap.metric]} heatmap: ${total} tasks`}
        testId={testId}
        attrs={{ total, metric: heatmap.metric }}
      />
      <div className="heat-scale" aria-hidden="true">
        <span>1</span>
        <span className="heat-ramp" />
        <span>{max.toLocaleString()} tasks per cell</span>
      </div>
    </div>
  );
}
