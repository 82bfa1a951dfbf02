// The Gantt view of a flow: one row per task, its bar split into queued / received / running / retry
// segments, the critical path outlined. Rows are virtualised so 2,000 tasks scroll smoothly.
import { useEffect, useEffectEvent, useMemo, useRef, useState } from "react";
import type { GraphNode, Segment } from "../api/types";
import { TERMINAL } from "../api/types";
import { fmtDuration, shortenIds, shortId, shortName } from "../format";

const ROW = 24;
const LABEL_W = 260;
const SEG_LABEL: Record<string, string> = {
  queued: "queued",
  received: "received (waiting for a slot)",
  running: "running",
  retry: "waiting to retry",
};

/** The node's segments; derived from its timestamps when the server sent none (live-only tasks). */
export function segmentsOf(t: GraphNode): Segment[] {
  if (t.segments && t.segments.length) {
    const segs = mergeRetryWaits(t.segments);
    // A live push may finish the task before its segments are refetched: close the open one there.
    // A lost task has no final event: its last stretch ends when it was last heard of.
    const last = segs[segs.length - 1];
    const end = t.finished_at ?? (TERMINAL.has(t.state) ? t.updated_at : null);
    if (last.end == null && end) segs[segs.length - 1] = { ...last, end: Math.max(last.start, end) };
    return segs;
  }
  const out: Segment[] = [];
  const end = t.finished_at ?? null;
  if (t.sent_at) out.push({ kind: "queued", start: t.sent_at, end: t.received_at ?? t.started_at ?? end });
  if (t.received_at) out.push({ kind: "received", start: t.received_at, end: t.started_at ?? end });
  if (t.started_at) out.push({ kind: "running", start: t.started_at, end });
  return out;
}

/**
 * After a retry, Celery re-publishes the task at once and a worker holds the message until its countdown
 * ends: the queued and received stretches before the next attempt starts are the retry's wait, so they
 * are drawn as one retry segment (the task page's history still lists every event).
 */
function mergeRetryWaits(segs: Segment[]): Segment[] {
  const out: Segment[] = [];
  for (const s of segs) {
    const prev = out[out.length - 1];
    if (prev && prev.kind === "retry" && (s.kind === "queued" || s.kind === "received")) {
      out[out.length - 1] = { ...prev, end: s.end ?? null };
      continue;
    }
    out.push(s);
  }
  return out;
}

function niceStep(span: number, px: number): number {
  const target = (span / px) * 110; // about one tick per 110 px
  const steps = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
    21600, 43200, 86400,
  ];
  return steps.find((s) => s >= target) ?? 86400 * Math.ceil(target / 86400);
}

export interface TimelineProps {
  tasks: GraphNode[];
  critical: Set<string>;
  selected: string | null;
  running: boolean;
  onSelect: (id: string) => void;
  /** Shown in the header when the rows are filtered (e.g. "failure only"). */
  note?: string | null;
  /** Members of collapsed groups not loaded yet, each with a button paging in the next ones. */
  more?: { id: string; label: string; count: number; load: () => void }[];
}

export function Timeline({ tasks, critical, selected, running, onSelect, note, more }: TimelineProps) {
  const scroller = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(900);
  const [height, setHeight] = useState(300);
  const [scrollTop, setScrollTop] = useState(0);
  const [zoom, setZoom] = useState(1);
  const [now, setNow] = useState(() => Date.now() / 1000);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const ro = new ResizeObserver(() => {
      setWidth(el.clientWidth);
      setHeight(el.clientHeight);
    });
    ro.observe(el);
    return () => ro.disconnect();
  }, []);
  useEffect(() => {
    if (!running) return;
    const t = window.setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => window.clearInterval(t);
  }, [running]);

  const rows = useMemo(() => {
    const withSegs = tasks.map((t) => ({ t, segs: segmentsOf(t) }));
    // Steps that never started (planned, never ran) go last, in the order the graph lists them.
    const start = (r: { t: GraphNode; segs: Segment[] }) => r.segs[0]?.start ?? r.t.sent_at ?? Infinity;
    return withSegs.sort((a, b) => {
      const [x, y] = [start(a), start(b)];
      return x === y ? 0 : x - y;
    });
  }, [tasks]);

  const [t0, t1] = useMemo(() => {
    let lo = Infinity;
    let hi = -Infinity;
    for (const r of rows) {
      for (const s of r.segs) {
        lo = Math.min(lo, s.start);
        hi = Math.max(hi, s.end ?? (running ? now : s.start));
      }
    }
    if (!Number.isFinite(lo)) return [now - 1, now];
    if (hi - lo < 0.001) hi = lo + 0.001;
    return [lo, hi];
  }, [rows, running, now]);

  const trackW = Math.max(200, (width - LABEL_W - 70) * zoom);
  const scale = trackW / (t1 - t0);
  const x = (ts: number) => (ts - t0) * scale;
  const step = niceStep(t1 - t0, trackW);
  const ticks: number[] = [];
  for (let v = 0; v <= t1 - t0 + 1e-9 && ticks.length < 400; v += step) ticks.push(v);

  // Bring the selected task's row into view when it was picked elsewhere (graph node, deep link); only a
  // new selection scrolls, not the rows changing under it.
  const reveal = useEffectEvent((id: string) => {
    const el = scroller.current;
    if (!el) return;
    const idx = rows.findIndex((r) => r.t.task_id === id);
    if (idx < 0) return;
    const top = idx * ROW;
    const axis = 24;
    if (top < el.scrollTop || top + ROW > el.scrollTop + el.clientHeight - axis) {
      el.scrollTop = Math.max(0, top - el.clientHeight / 3);
    }
  });
  useEffect(() => {
    if (selected) reveal(selected);
  }, [selected]);

  const first = Math.max(0, Math.floor(scrollTop / ROW) - 10);
  const last = Math.min(rows.length, Math.ceil((scrollTop + height) / ROW) + 10);
  const visible = rows.slice(first, last);
  const critCount = rows.filter((r) => critical.has(r.t.task_id)).length;

  return (
    <div className="timeline" data-testid="timeline">
      <div className="tl-head">
        <strong style={{ color: "var(--fg)" }}>Timeline</strong>
        <span>
          {rows.length.toLocaleString()} {rows.length === 1 ? "task" : "tasks"}
          {note ? ` (${note})` : ""} · {fmtDuration(t1 - t0)}
        </span>
        {more?.map((m) => (
          <button
            key={m.id}
            type="button"
            className="btn"
            onClick={m.load}
            data-testid="timeline-more"
            title={`${m.count.toLocaleString()} more tasks of this group are not loaded: load the next ones, slowest first`}
          >
            +{m.count.toLocaleString()} {m.label} not loaded · show more
          </button>
        ))}
        {(["queued", "received", "running", "retry"] as const).map((k) => (
          <span className="lg" key={k}>
            <span className={`sw seg-${k}`} /> {k}
          </span>
        ))}
        {critCount > 0 && (
          <span className="lg">
            <span className="sw" style={{ outline: "1.5px solid var(--crit)", background: "transparent" }} /> critical
            path ({critCount})
          </span>
        )}
        <span style={{ flex: 1 }} />
        <span className="seg-ctl" aria-label="Timeline zoom">
          <button
            type="button"
            onClick={() => setZoom((z) => Math.max(1, z / 2))}
            disabled={zoom <= 1}
            aria-label="Zoom out"
          >
            −
          </button>
          <button type="button" onClick={() => setZoom(1)} aria-label="Fit timeline to width">
            {zoom === 1 ? "fit" : `${zoom}×`}
          </button>
          <button type="button" onClick={() => setZoom((z) => Math.min(64, z * 2))} aria-label="Zoom in">
            +
          </button>
        </span>
      </div>
      <div className="tl-scroll" ref={scroller} onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)}>
        <div style={{ width: LABEL_W + trackW + 70, position: "relative" }}>
          <div className="tl-axis">
            <div className="tl-labelcol" />
            <div style={{ position: "relative", flex: 1 }}>
              {ticks.map((v) => (
                <span key={v} className="tl-tick" style={{ left: v * scale }}>
                  {v === 0 ? "0" : `+${fmtDuration(v)}`}
                </span>
              ))}
            </div>
          </div>
          <div style={{ height: rows.length * ROW, position: "relative" }}>
            {visible.map((r, i) => {
              const t = r.t;
              const idx = first + i;
              const crit = critical.has(t.task_id);
              const segs = r.segs;
              const start = segs[0]?.start;
              const endTs = segs.length
                ? (segs[segs.length - 1].end ?? (running ? now : segs[segs.length - 1].start))
                : undefined;
              let lastRun = -1;
              segs.forEach((s, j) => {
                if (s.kind === "running") lastRun = j;
              });
              const tip = segs
                .map(
                  (s) =>
                    `${SEG_LABEL[s.kind] ?? s.kind}: ${fmtDuration((s.end ?? now) - s.start)}${s.end ? "" : " (ongoing)"}`,
                )
                .join("\n");
              return (
                <div
                  key={t.task_id}
                  className={`tl-row ${selected === t.task_id ? "sel" : ""}`}
                  style={{ top: idx * ROW }}
                  onClick={() => onSelect(t.task_id)}
                  data-testid={`tl-row-${t.task_id}`}
                  data-state={t.state}
                  role="button"
                  tabIndex={0}
                  onKeyDown={(e) => {
                    if (e.key === "Enter") onSelect(t.task_id);
                  }}
                  aria-label={`${t.name ?? "task"} ${t.state}`}
                >
                  <div className="tl-label tl-labelcol" title={`${t.name ?? ""}\n${t.task_id}`}>
                    <span className={`dot st-${t.state}`} aria-hidden="true" />
                    <span className="nm">{shortName(t.name)}</span>
                    <span className="mono sub">{shortId(t.task_id)}</span>
                    {crit && (
                      <span className="crit-mark" title="on the critical path">
                        ◆
                      </span>
                    )}
                  </div>
                  <div className="tl-track">
                    {ticks.map((v) => (
                      <span
                        key={v}
                        style={{
                          position: "absolute",
                          left: v * scale,
                          top: 0,
                          bottom: 0,
                          borderLeft: "1px solid var(--grid)",
                        }}
                      />
                    ))}
                    {start === undefined && (t.state === "PLANNED" || t.state === "NOT_RUN") && (
                      <span className="tl-none" title={t.reason ?? undefined}>
                        {t.state === "PLANNED" ? "planned, not sent yet" : `never ran${t.reason ? `: ${shortenIds(t.reason)}` : ""}`}
                      </span>
                    )}
                    {start !== undefined && endTs !== undefined && (
                      <>
                        <div
                          className={`tl-bar ${crit ? "crit" : ""}`}
                          style={{ left: x(start), width: Math.max(2, x(endTs) - x(start)) }}
                          title={tip}
                        >
                          {segs.map((s, j) => {
                            const e = s.end ?? (running ? now : s.start);
                            // Only the last attempt's run gets the outcome colour; earlier ones ended in a retry.
                            const done = s.kind === "running" && s.end && j === lastRun ? ` done-${t.state}` : "";
                            return (
                              <span
                                key={j}
                                className={`tl-seg seg-${s.kind}${done}${s.end ? "" : " seg-open"}`}
                                data-testid={`seg-${s.kind}`}
                                style={{ left: (s.start - start) * scale, width: Math.max(1, (e - s.start) * scale) }}
                              />
                            );
                          })}
                        </div>
                        <span className="tl-dur" style={{ left: x(endTs) + 6 }}>
                          {fmtDuration(endTs - start)}
                        </span>
                      </>
                    )}
                  </div>
                </div>
              );
            })}
          </div>
        </div>
      </div>
    </div>
  );
}
