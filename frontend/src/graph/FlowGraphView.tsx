// The flow graph: React Flow drawing the structure (structure.ts) at positions from ELK (layout worker).
// Task states come from `tasks` and update nodes in place; only a structural change triggers a layout.
import {
  Background,
  BackgroundVariant,
  Controls,
  Handle,
  MarkerType,
  MiniMap,
  Position,
  ReactFlow,
  ReactFlowProvider,
  useReactFlow,
  type Edge,
  type Node,
  type NodeProps,
} from "@xyflow/react";
import { memo, useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import type { CollapsedGroup, EdgeKind, GraphNode } from "../api/types";
import { TASK_STATES } from "../api/types";
import { fmtDuration, shortenIds, shortName, stateWords } from "../format";
import { useTheme } from "../theme";
import { useLayoutClient } from "./layout";
import { ReuseTable } from "./reuse";
import { EXPAND_STEP, type Container, type Structure, type VisibleNode } from "./structure";

const NODE_W = 210;
const NODE_H = 58;

type Opener = (id: string, kind: "task" | "cluster") => void;

interface TaskNodeData extends Record<string, unknown> {
  task: GraphNode | undefined;
  id: string;
  crit: boolean;
  selected: boolean;
  dim: boolean;
  now: number | null;
  open: Opener;
}

interface ClusterNodeData extends Record<string, unknown> {
  id: string;
  /** A group the server sent collapsed: its total and percentiles (counts are in `counts`). */
  server?: CollapsedGroup;
  label: string;
  members: string[];
  shown: number;
  dim: boolean;
  counts: [string, number][];
  crit: boolean;
  open: Opener;
}

interface ContainerData extends Record<string, unknown> {
  c: Container;
}

function onKey(e: KeyboardEvent, fire: () => void) {
  if (e.key === "Enter" || e.key === " ") {
    e.preventDefault();
    fire();
  }
}

/** Time in the task body, or since it started while it runs. */
function taskDuration(t: GraphNode, now: number | null): number | null {
  if (t.runtime !== null && t.runtime !== undefined) return t.runtime;
  if (t.started_at && t.finished_at) return t.finished_at - t.started_at;
  if (t.started_at && !t.finished_at && now !== null) return Math.max(0, now - t.started_at);
  return null;
}

/** The node's tooltip: name, id, state, and why (reason, exception, stuck) when there is a why. */
function nodeTitle(t: GraphNode | undefined, id: string, state: string): string {
  const lines = [t?.name ?? "task not sent yet", id, state];
  if (t?.reason) lines.push(t.reason);
  if (t?.exception) lines.push(t.exception);
  if (t?.stuck) lines.push("stuck: running far longer than its own history");
  return lines.join("\n");
}

const TaskNode = memo(function TaskNode({ data }: NodeProps<Node<TaskNodeData>>) {
  const t = data.task;
  const state = t?.state ?? "PENDING";
  const dur = t ? taskDuration(t, data.now) : null;
  const retries = t?.retries ?? 0;
  const cls = ["tnode", `st-${state}`, data.crit ? "crit" : "", data.selected ? "selected" : "", data.dim ? "dim" : ""];
  return (
    <div
      className={cls.join(" ")}
      data-testid={`node-${data.id}`}
      data-task-id={data.id}
      data-state={state}
      data-stuck={t?.stuck ? "true" : undefined}
      title={nodeTitle(t, data.id, state)}
      tabIndex={0}
      role="button"
      aria-label={`${t?.name ?? "task"} ${state}: open details`}
      onKeyDown={(e) => onKey(e, () => data.open(data.id, "task"))}
    >
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <span className="bar" aria-hidden="true" />
      <div className="body">
        <div className="name">
          {state === "LOST" && (
            <span className="lost-mark" aria-hidden="true">
              ↯
            </span>
          )}
          <span className="nm">{t?.name ? shortName(t.name) : <span className="muted">not sent yet</span>}</span>
          <span className="nid mono">{data.id.slice(0, 6)}</span>
        </div>
        <div className="meta">
          <span className="st">{state === "NOT_RUN" ? "NEVER RAN" : state}</span>
          {t?.exception && (state === "FAILURE" || state === "RETRY") && (
            <span className="exc-type" title={t.exception}>
              {t.exception.split(/[:(]/)[0]}
            </span>
          )}
          {t?.reason && (state === "NOT_RUN" || state === "LOST") && (
            <span className="why" data-testid="node-reason">
              {shortenIds(t.reason)}
            </span>
          )}
          <span className="nb">
            {t?.stuck && (
              <span className="b stuck" data-testid="stuck-badge">
                stuck
              </span>
            )}
            {retries > 0 && (
              <span
                className="b retry"
                title={`${retries} ${retries === 1 ? "retry" : "retries"}`}
                data-testid="retry-badge"
              >
                ↻{retries}
              </span>
            )}
            {dur !== null && (
              <span className="b" title="runtime">
                {fmtDuration(dur)}
              </span>
            )}
          </span>
        </div>
      </div>
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
});

/** The state a collapsed node is coloured by: the worst among its tasks, else their one state. */
const WORST = ["FAILURE", "LOST", "REJECTED", "REVOKED", "RETRY", "STARTED"];
function worstState(counts: [string, number][]): string {
  const have = new Set(counts.map(([s]) => s));
  const worst = WORST.find((s) => have.has(s));
  if (worst) return worst === "RETRY" ? "STARTED" : worst;
  return counts.length === 1 ? counts[0][0] : "PENDING";
}

const ClusterNode = memo(function ClusterNode({ data }: NodeProps<Node<ClusterNodeData>>) {
  const server = data.server;
  const total = server ? server.total - data.shown : data.members.length;
  const worst = worstState(data.counts);
  return (
    <div
      className={`tnode cluster st-${worst} ${data.crit ? "crit" : ""} ${data.dim ? "dim" : ""}`}
      data-testid={`${server ? "collapsed" : "cluster"}-${data.label}`}
      title={
        server
          ? `${total.toLocaleString()} more tasks of this ${server.kind}: click to draw the next ${EXPAND_STEP}, slowest first`
          : `${total} tasks collapsed: click to draw ${Math.min(total, EXPAND_STEP)} of them`
      }
      tabIndex={0}
      role="button"
      aria-label={`${total} ${data.label} tasks collapsed: ${server ? "show more" : "expand"}`}
      onKeyDown={(e) => onKey(e, () => data.open(data.id, "cluster"))}
    >
      <Handle type="target" position={Position.Left} isConnectable={false} />
      <span className="bar" aria-hidden="true" />
      <div className="body">
        <div className="name">
          {data.label}{" "}
          <span className="muted">
            ×{total.toLocaleString()}
            {data.shown > 0 ? " more" : ""}
          </span>
        </div>
        <div className="counts-mini" aria-hidden="true">
          {data.counts.map(([s, n]) => (
            <span key={s} className={`st-${s}`} style={{ flexGrow: n }} />
          ))}
        </div>
        <div className="meta">
          {data.counts.map(([s, n]) => (
            <span key={s} className={`st-${s}`} style={{ color: "var(--c)" }} data-count={s}>
              {n.toLocaleString()} {stateWords(s)}
            </span>
          ))}
          <span className="nb">
            {server ? (
              <span
                className="b"
                data-testid="collapsed-runtime"
                title={`runtime p50 ${fmtDuration(server.runtime.p50)}, p95 ${fmtDuration(server.runtime.p95)}, p99 ${fmtDuration(server.runtime.p99)}; queue wait p50 ${fmtDuration(server.queue_wait.p50)}, p95 ${fmtDuration(server.queue_wait.p95)}`}
              >
                p95 {fmtDuration(server.runtime.p95)}
              </span>
            ) : (
              <span className="b">{total > EXPAND_STEP ? `show ${EXPAND_STEP}` : "expand"}</span>
            )}
          </span>
        </div>
      </div>
      <Handle type="source" position={Position.Right} isConnectable={false} />
    </div>
  );
});

function ContainerNode({ data }: NodeProps<Node<ContainerData>>) {
  return (
    <div className={`container-node ${data.c.kind}`} data-testid={`container-${data.c.kind}`}>
      <span className="clabel">{data.c.label}</span>
    </div>
  );
}

const nodeTypes = { task: TaskNode, cluster: ClusterNode, container: ContainerNode };

const EDGE_STYLE: Record<EdgeKind, { stroke: string; dash?: string; width: number }> = {
  spawn: { stroke: "var(--edge-spawn)", dash: "3 4", width: 1.3 },
  chain: { stroke: "var(--edge-chain)", width: 1.7 },
  chord: { stroke: "var(--edge-chord)", width: 1.7 },
  errback: { stroke: "var(--edge-errback)", dash: "7 4", width: 1.7 },
};

export function EdgeLegend() {
  return (
    <div className="legend" aria-label="Edge kinds">
      {(Object.keys(EDGE_STYLE) as EdgeKind[]).map((k) => (
        <span className="lg" key={k}>
          <svg width="26" height="8" aria-hidden="true">
            <line
              x1="0"
              y1="4"
              x2="26"
              y2="4"
              stroke={EDGE_STYLE[k].stroke}
              strokeWidth={2}
              strokeDasharray={EDGE_STYLE[k].dash}
            />
          </svg>
          {k}
        </span>
      ))}
      <span className="lg">
        <svg width="14" height="10" aria-hidden="true">
          <rect x="1" y="1" width="12" height="8" rx="2" fill="none" stroke="var(--crit)" strokeWidth={1.5} />
        </svg>
        critical path
      </span>
    </div>
  );
}

export interface GraphViewProps {
  structure: Structure;
  tasks: Map<string, GraphNode>;
  critical: Set<string>;
  selected: string | null;
  running: boolean;
  onOpenTask: (id: string) => void;
  onExpand: (clusterId: string) => void;
  /** Live figures of server-collapsed groups, by group id (newer than the structure's). */
  liveGroups?: ReadonlyMap<string, CollapsedGroup>;
  /** Dim every task not in this state (null: none dimmed). */
  focus: string | null;
}

type Pos = Record<string, { x: number; y: number; width: number; height: number }>;

function Inner({ structure, tasks, critical, selected, running, onOpenTask, onExpand, focus, liveGroups }: GraphViewProps) {
  const rf = useReactFlow();
  const theme = useTheme();
  const layoutClient = useLayoutClient();
  const [positions, setPositions] = useState<{ key: string; pos: Pos; ms: number; n: number } | null>(null);
  const [layoutError, setLayoutError] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now() / 1000);
  const fitted = useRef<string | null>(null);
  // Nodes get one stable opener that calls the latest handlers, so a new handler re-renders no node.
  const handlers = useRef({ onExpand, onOpenTask });
  useLayoutEffect(() => {
    handlers.current = { onExpand, onOpenTask };
  });
  const open = useCallback<Opener>(
    (id, kind) => (kind === "cluster" ? handlers.current.onExpand(id) : handlers.current.onOpenTask(id)),
    [],
  );

  // Lay out whenever the structure (not the states) changes.
  useEffect(() => {
    let live = true;
    const sizes = (n: VisibleNode) => ({ width: NODE_W, height: NODE_H, id: n.id, parent: n.parent });
    void layoutClient
      .layout({
        hierarchical: structure.containers.length > 0,
        nodes: structure.nodes.map(sizes),
        containers: structure.containers.map((c) => ({ id: c.id, parent: c.parent })),
        edges: structure.edges.map((e) => ({ id: e.id, source: e.source, target: e.target })),
      })
      .then((r) => {
        if (!live) return;
        if (r.error) setLayoutError(r.error);
        else setPositions((prev) => ({ key: structure.key, pos: r.positions, ms: r.ms, n: (prev?.n ?? 0) + 1 }));
      });
    return () => {
      live = false;
    };
  }, [structure, layoutClient]);

  // Running durations tick once a second while the flow runs.
  useEffect(() => {
    if (!running) return;
    const t = window.setInterval(() => setNow(Date.now() / 1000), 1000);
    return () => window.clearInterval(t);
  }, [running]);

  const critDrawn = useMemo(() => {
    const s = new Set<string>();
    for (const id of critical) {
      const d = structure.drawnAs.get(id);
      if (d) s.add(d);
    }
    return s;
  }, [critical, structure]);

  // Per-node cache: a node object is rebuilt only when its task, selection or critical mark changed, so
  // a live batch touching 3 tasks re-renders 3 nodes, not 2,000.
  const [reuse] = useState(() => new ReuseTable<Node>());
  const nodes: Node[] = useMemo(() => {
    if (!positions) return [];
    const pos = positions.pos;
    const out: Node[] = [];
    const memo = (id: string, dep: unknown[], make: () => Node) => reuse.get(id, dep, make);
    const depth = (c: Container): number => (c.parent ? 1 : 0);
    const containers = [...structure.containers].sort((a, b) => depth(a) - depth(b));
    for (const c of containers) {
      const p = pos[c.id];
      if (!p) continue;
      out.push(
        memo(c.id, [p, c.label], () => ({
          id: c.id,
          type: "container",
          position: { x: p.x, y: p.y },
          width: p.width,
          height: p.height,
          style: { width: p.width, height: p.height },
          parentId: c.parent ?? undefined,
          data: { c },
          selectable: false,
          draggable: false,
          focusable: false,
          zIndex: -1,
        })),
      );
    }
    for (const n of structure.nodes) {
      const p = pos[n.id];
      if (!p) continue;
      const isRunning = n.kind === "task" && tasks.get(n.id)?.state === "STARTED";
      if (n.kind === "task") {
        const task = tasks.get(n.id);
        const crit = critDrawn.has(n.id);
        const sel = selected === n.id;
        const tick = isRunning ? now : null;
        const dim = focus !== null && (task?.state ?? "PENDING") !== focus;
        out.push(
          memo(n.id, [p, task, crit, sel, tick, dim], () => ({
            id: n.id,
            type: "task",
            position: { x: p.x, y: p.y },
            width: NODE_W,
            height: NODE_H,
            parentId: n.parent ?? undefined,
            extent: n.parent ? "parent" : undefined,
            data: { task, id: n.id, crit, selected: sel, dim, now: tick, open } satisfies TaskNodeData,
            draggable: false,
            connectable: false,
            focusable: false,
          })),
        );
      } else {
        const members = n.members ?? [];
        const counts = new Map<string, number>();
        const server = n.server ? (liveGroups?.get(n.server.id) ?? n.server) : undefined;
        if (server && n.server) {
          // The server's counts of the whole group, less the members drawn on their own.
          for (const [s, c] of Object.entries(server.counts)) counts.set(s, c);
          for (const id of n.server.listed) {
            const s = tasks.get(id)?.state;
            if (s && counts.has(s)) counts.set(s, Math.max(0, counts.get(s)! - 1));
          }
          for (const [s, c] of [...counts]) if (c === 0) counts.delete(s);
        }
        for (const m of members) {
          const s = tasks.get(m)?.state ?? "PENDING";
          counts.set(s, (counts.get(s) ?? 0) + 1);
        }
        const ordered = TASK_STATES.filter((s) => counts.has(s)).map((s) => [s, counts.get(s)!] as [string, number]);
        const sig = ordered.map(([s, c]) => `${s}${c}`).join(",");
        const crit = critDrawn.has(n.id);
        const dim = focus !== null && !counts.has(focus);
        out.push(
          memo(n.id, [p, sig, crit, members.length, dim, server, n.shown], () => ({
            id: n.id,
            type: "cluster",
            position: { x: p.x, y: p.y },
            width: NODE_W,
            height: NODE_H,
            parentId: n.parent ?? undefined,
            data: {
              id: n.id,
              label: n.label ?? "tasks",
              members,
              shown: n.shown ?? 0,
              server: server && n.server ? { ...server, listed: n.server.listed } : undefined,
              dim,
              counts: ordered,
              crit,
              open,
            } satisfies ClusterNodeData,
            draggable: false,
            connectable: false,
            focusable: false,
          })),
        );
      }
    }
    reuse.commit();
    return out;
  }, [positions, structure, tasks, critDrawn, selected, now, focus, open, reuse, liveGroups]);

  const critEdges = useMemo(() => {
    const s = new Set<string>();
    const path = [...critical].map((id) => structure.drawnAs.get(id));
    for (let i = 1; i < path.length; i++) if (path[i - 1] && path[i]) s.add(`${path[i - 1]}>${path[i]}`);
    return s;
  }, [critical, structure]);

  const edges: Edge[] = useMemo(
    () =>
      structure.edges.map((e) => {
        const st = EDGE_STYLE[e.kind];
        const crit = critEdges.has(`${e.source}>${e.target}`);
        return {
          id: e.id,
          source: e.source,
          target: e.target,
          className: `edge-${e.kind}${crit ? " edge-crit" : ""}`,
          label: e.count > 1 ? `×${e.count.toLocaleString()}` : undefined,
          labelStyle: { fill: "var(--fg-2)", fontSize: 10 },
          labelBgStyle: { fill: "var(--bg-1)" },
          // The critical path glows around the edge; the edge keeps its kind's colour and dash.
          style: { stroke: st.stroke, strokeWidth: crit ? st.width + 1 : st.width, strokeDasharray: st.dash },
          markerEnd: { type: MarkerType.ArrowClosed, color: st.stroke, width: 14, height: 14 },
          focusable: false,
          selectable: false,
          zIndex: 1,
        } satisfies Edge;
      }),
    [structure, critEdges],
  );

  // Fit once per new layout (not on every live update, which would fight the user's zoom).
  useEffect(() => {
    if (!positions || nodes.length === 0 || fitted.current === positions.key) return;
    const first = fitted.current === null;
    fitted.current = positions.key;
    const big = structure.nodes.length > 60;
    window.requestAnimationFrame(() => {
      void rf.fitView({ padding: 0.12, maxZoom: 1.1, minZoom: big ? 0.1 : 0.2, duration: first ? 0 : 250 });
    });
  }, [positions, nodes.length, rf, structure.nodes.length]);

  // Until the user pans or zooms, keep the whole graph in view when the canvas resizes (side panel
  // opening, window resize); after that, leave their viewport alone.
  const autoFit = useRef(true);
  const wrapper = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = wrapper.current;
    if (!el) return;
    let frame = 0;
    const ro = new ResizeObserver(() => {
      if (!autoFit.current || fitted.current === null) return;
      window.cancelAnimationFrame(frame);
      frame = window.requestAnimationFrame(() => {
        void rf.fitView({ padding: 0.12, maxZoom: 1.1, minZoom: 0.1 });
      });
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      window.cancelAnimationFrame(frame);
    };
  }, [rf]);

  const onNodeClick = useCallback(
    (_: unknown, node: Node) => {
      if (node.type === "task") open(node.id, "task");
      else if (node.type === "cluster") open(node.id, "cluster");
    },
    [open],
  );

  const ready = positions !== null && positions.key === structure.key;
  return (
    <div
      ref={wrapper}
      className="canvas"
      data-testid="graph"
      data-ready={ready ? "true" : "false"}
      data-layout-ms={positions ? Math.round(positions.ms) : undefined}
      data-nodes={structure.nodes.length}
      data-layouts={positions?.n ?? 0}
    >
      <EdgeLegend />
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodeClick={onNodeClick}
        onMove={(event) => {
          if (event) autoFit.current = false; // a user gesture, not a programmatic fit
        }}
        nodesDraggable={false}
        nodesConnectable={false}
        elementsSelectable={false}
        onlyRenderVisibleElements={structure.nodes.length > 250}
        minZoom={0.05}
        maxZoom={2}
        proOptions={{ hideAttribution: true }}
        colorMode={theme}
      >
        <Background variant={BackgroundVariant.Dots} gap={18} size={1} />
        <Controls showInteractive={false} position="bottom-left" />
        {structure.nodes.length > 12 && (
          <MiniMap
            pannable
            zoomable
            position="bottom-right"
            nodeColor={(n) => {
              if (n.type === "container") return "transparent";
              const st = n.type === "task" ? ((n.data as TaskNodeData).task?.state ?? "PENDING") : "PENDING";
              return `var(--st-${st})`;
            }}
            nodeStrokeColor={(n) => (n.type === "container" ? "var(--line-2)" : "transparent")}
            maskColor="color-mix(in srgb, var(--bg) 70%, transparent)"
            style={{ width: 180, height: 110 }}
          />
        )}
      </ReactFlow>
      {!positions && !layoutError && (
        <div className="canvas-msg">
          <span className="spinner" aria-hidden="true" />
          &nbsp; Laying out {structure.nodes.length.toLocaleString()} nodes…
        </div>
      )}
      {layoutError && <div className="canvas-msg">Layout failed: {layoutError}</div>}
      {positions && !ready && !layoutError && (
        <div className="relayout" role="status">
          <span className="spinner" aria-hidden="true" /> Laying out {structure.nodes.length.toLocaleString()} nodes…
        </div>
      )}
    </div>
  );
}

export function FlowGraphView(props: GraphViewProps) {
  return (
    <ReactFlowProvider>
      <Inner {...props} />
    </ReactFlowProvider>
  );
}
