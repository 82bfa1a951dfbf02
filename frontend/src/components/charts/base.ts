// What every uPlot chart of the UI shares: colours read from the theme's CSS variables (a canvas takes
// real colours, not var()), axes in the theme's font, and a tooltip that follows the cursor.
import type uPlot from "uplot";

export interface Palette {
  fg: string;
  muted: string;
  grid: string;
  accent: string;
  /** The colour of a task state (--st-*), as chips and graph nodes draw it. */
  state: (state: string) => string;
  /** Any theme variable, e.g. "--crit". */
  v: (name: string) => string;
}

/** The theme's colours as `el` sees them (re-read after every theme change). */
export function palette(el: HTMLElement): Palette {
  const cs = getComputedStyle(el);
  const v = (name: string) => cs.getPropertyValue(name).trim() || "#888888";
  return {
    fg: v("--fg"),
    muted: v("--fg-3"),
    grid: v("--line"),
    accent: v("--accent"),
    state: (s) => v(`--st-${s}`),
    v,
  };
}

/** `#rrggbb` at `alpha` (0..1) as rgba(); any other colour as it is. */
export function withAlpha(color: string, alpha: number): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(color);
  if (!m) return color;
  const [r, g, b] = [m[1], m[2], m[3]].map((h) => parseInt(h, 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

const FONT = "11px Inter, ui-sans-serif, system-ui, sans-serif";
const LABEL_FONT = "600 11px Inter, ui-sans-serif, system-ui, sans-serif";

/** The time axis along the bottom (uPlot formats epoch seconds as local time). */
export function timeAxis(p: Palette): uPlot.Axis {
  return {
    stroke: p.muted,
    font: FONT,
    grid: { stroke: p.grid, width: 1 },
    ticks: { stroke: p.grid, width: 1, size: 4 },
  };
}

/** A value axis on the left, labelled with its unit ("tasks per 5 min", "runtime"). */
export function valueAxis(p: Palette, label: string, extra: Partial<uPlot.Axis> = {}): uPlot.Axis {
  return {
    stroke: p.muted,
    font: FONT,
    label,
    labelFont: LABEL_FONT,
    labelSize: 18,
    size: 56,
    grid: { stroke: p.grid, width: 1 },
    ticks: { stroke: p.grid, width: 1, size: 4 },
    ...extra,
  };
}

/** Whole numbers only on a count axis. */
export const COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 1e6];

/** Bucket midpoints: the x of each bucket, so the cursor's nearest point is the bucket under it. */
export function midpoints(edges: number[]): number[] {
  return edges.slice(0, -1).map((e, i) => (e + edges[i + 1]) / 2);
}

/** The cursor of a chart that reads values, not zooms: no drag selection. */
export const READ_CURSOR: uPlot.Cursor = { drag: { x: false, y: false, setScale: false } };

/**
 * A tooltip over the plot area, following the cursor; `text` gives its lines (shown as text, never
 * HTML), or null to hide it.
 */
export function tooltipPlugin(text: (u: uPlot) => string | null): uPlot.Plugin {
  let tip: HTMLDivElement | null = null;
  return {
    hooks: {
      init: (u) => {
        tip = document.createElement("div");
        tip.className = "chart-tip";
        tip.setAttribute("role", "tooltip");
        tip.style.display = "none";
        u.over.appendChild(tip);
        u.over.addEventListener("mouseleave", () => {
          if (tip) tip.style.display = "none";
        });
      },
      setCursor: (u) => {
        if (!tip) return;
        const { left, top } = u.cursor;
        const body = left !== undefined && top !== undefined && left >= 0 && top >= 0 ? text(u) : null;
        if (!body) {
          tip.style.display = "none";
          return;
        }
        tip.textContent = body;
        tip.style.display = "block";
        const w = u.over.clientWidth;
        const h = u.over.clientHeight;
        const x = left! > w / 2 ? left! - tip.offsetWidth - 12 : left! + 12;
        const y = Math.min(Math.max(0, top! - tip.offsetHeight / 2), Math.max(0, h - tip.offsetHeight));
        tip.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
      },
    },
  };
}

/** Index of the bucket holding `v` (edges ascending), or -1 outside them. */
export function bucketOf(edges: number[], v: number): number {
  if (!(v >= edges[0]) || !(v < edges[edges.length - 1])) return -1;
  let lo = 0;
  let hi = edges.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (edges[mid] <= v) lo = mid;
    else hi = mid;
  }
  return lo;
}
