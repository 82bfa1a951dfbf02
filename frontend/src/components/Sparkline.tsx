// A failure cluster's counts over time as a small uPlot chart (uPlot: the charting library the UI's charts
// use, chosen for its size and speed). The canvas takes real colours, read from the theme's CSS variables
// and redrawn when the theme changes.
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { fmtTime } from "../format";
import { useTheme } from "../theme";
import { withAlpha } from "./charts/base";

const W = 150;
const H = 34;

export function Sparkline({
  start,
  step,
  counts,
  colorVar = "--st-FAILURE",
}: {
  /** Epoch seconds of the first bucket, and each bucket's width in seconds. */
  start: number;
  step: number;
  counts: number[];
  colorVar?: string;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const theme = useTheme();
  useEffect(() => {
    const el = ref.current;
    if (!el || counts.length === 0) return;
    const color = getComputedStyle(el).getPropertyValue(colorVar).trim() || "#f2555a";
    const xs = counts.map((_, i) => start + i * step);
    const max = Math.max(1, ...counts);
    const chart = new uPlot(
      {
        width: W,
        height: H,
        pxAlign: false,
        cursor: { show: false },
        legend: { show: false },
        select: { show: false, left: 0, top: 0, width: 0, height: 0 },
        axes: [{ show: false }, { show: false }],
        // One bar per bucket, from its start to the next bucket's.
        scales: { x: { time: false, range: [start, start + step * counts.length] }, y: { range: [0, max] } },
        series: [
          {},
          {
            stroke: color,
            fill: withAlpha(color, 0.75),
            width: 0,
            points: { show: false },
            paths: uPlot.paths.bars?.({ align: 1, size: [0.8, 12], gap: 1 }),
          },
        ],
        padding: [2, 0, 0, 0],
      },
      [xs, counts],
      el,
    );
    return () => chart.destroy();
  }, [start, step, counts, colorVar, theme]);
  const total = counts.reduce((a, b) => a + b, 0);
  const end = start + step * counts.length;
  return (
    <div
      ref={ref}
      className="spark"
      role="img"
      aria-label={`${total} between ${fmtTime(start)} and ${fmtTime(end)}`}
      title={`${total} from ${fmtTime(start)} to ${fmtTime(end)}, ${counts.length} buckets`}
      data-testid="sparkline"
      data-total={total}
      style={{ width: W, height: H }}
    />
  );
}
