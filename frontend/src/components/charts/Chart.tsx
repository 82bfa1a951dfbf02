// A uPlot chart as a React component: it fills its container's width, is rebuilt when its data, its size
// or the theme changes, and is destroyed on unmount.
import { useEffect, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { useTheme } from "../../theme";
import { palette, type Palette } from "./base";

/** What a chart draws: its data, and its options built from the theme's colours. */
export interface ChartSpec {
  data: uPlot.AlignedData;
  options: (p: Palette) => Omit<uPlot.Options, "width" | "height">;
}

export function Chart({
  spec,
  height,
  label,
  testId,
  attrs,
}: {
  /** Memoise it (useMemo) on the data it draws: a new spec rebuilds the chart. */
  spec: ChartSpec;
  height: number;
  /** What the chart shows, in words, for screen readers. */
  label: string;
  testId?: string;
  attrs?: Record<string, string | number>;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const theme = useTheme();
  const [width, setWidth] = useState(0);
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(([entry]) => setWidth(Math.floor(entry.contentRect.width)));
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  useEffect(() => {
    const el = ref.current;
    if (!el || width <= 0) return;
    const chart = new uPlot({ ...spec.options(palette(el)), width, height }, spec.data, el);
    return () => chart.destroy();
  }, [spec, width, height, theme]);
  const data = Object.fromEntries(Object.entries(attrs ?? {}).map(([k, v]) => [`data-${k}`, v]));
  return (
    <div ref={ref} className="chart" role="img" aria-label={label} data-testid={testId} style={{ height }} {...data} />
  );
}
