// From the API's graph to what is drawn: group/chord containers, and huge fan-outs collapsed into one
// "×N" node (expanded on click), so a 2,000-task flow stays a readable, fast graph. The structure depends
// only on ids and edges, never on task states: live state changes re-render nodes without a re-layout.
import type { CollapsedGroup, EdgeKind, GraphNode, GraphShape } from "../api/types";

/** A fan-out bigger than this is collapsed into one node until expanded. */
export const CLUSTER_AT = 24;
/** In a big flow, smaller fan-outs of leaf tasks collapse too, so the drawing stays a few hundred nodes. */
export const BIG_FLOW = 300;
export const LEAF_CLUSTER_AT = 6;
/** Each click on a collapsed node draws this many more of its tasks (a 2,000-task layout takes ~15 s). */
export const EXPAND_STEP = 100;

/**
 * Which tasks of a collapsed fan-out to draw next: failures and lost tasks first, then running, retrying,
 * waiting, planned, and the steps that never ran; successes last.
 */
const PRIORITY: Record<string, number> = {
  FAILURE: 0,
  LOST: 1,
  REJECTED: 2,
  REVOKED: 3,
  RETRY: 4,
  STARTED: 5,
  RECEIVED: 6,
  PENDING: 7,
  PLANNED: 8,
  NOT_RUN: 9,
};

export function pickToExpand(members: string[], stateOf: (id: string) => string | undefined): string[] {
  const rank = (id: string) => PRIORITY[stateOf(id) ?? "PENDING"] ?? 10;
  return members
    .map((id, i) => ({ id, i, r: rank(id) }))
    .sort((a, b) => a.r - b.r || a.i - b.i)
    .slice(0, EXPAND_STEP)
    .map((x) => x.id);
}

export interface Container {
  id: string;
  kind: "group" | "chord" | "flow";
  label: string;
  parent: string | null;
  size: number;
}

export interface VisibleNode {
  id: string;
  kind: "task" | "cluster";
  parent: string | null;
  /** For a cluster: the task ids it stands for, and a label (task name). */
  members?: string[];
  label?: string;
  /** For a cluster: how many tasks of its fan-out are already drawn on their own. */
  shown?: number;
  /** For a group the server sent collapsed: its figures (the members are not in the browser). */
  server?: CollapsedGroup;
}

export interface VisibleEdge {
  id: string;
  source: string;
  target: string;
  kind: EdgeKind;
  /** Number of underlying edges (a collapsed fan-out draws one edge for many). */
  count: number;
}

export interface Structure {
  nodes: VisibleNode[];
  containers: Container[];
  edges: VisibleEdge[];
  /** task id -> the visible node drawing it (itself or its cluster). */
  drawnAs: Map<string, string>;
  /** A string that changes exactly when a re-layout is needed. */
  key: string;
}

export interface FlowLabel {
  root_id: string;
  label: string;
}

const shortName = (n: string | null | undefined) => (n ? n.slice(n.lastIndexOf(".") + 1) : "task");

export function buildStructure(
  graph: GraphShape,
  expanded: ReadonlyMap<string, ReadonlySet<string>>,
  flows?: FlowLabel[],
): Structure {
  const nodesById = new Map<string, GraphNode>(graph.nodes.map((n) => [n.task_id, n]));
  const containers: Container[] = [];
  const parentOf = new Map<string, string>();

  // Flow containers (trace view): every task sits in the box of its root workflow.
  if (flows && flows.length > 1) {
    const flowIds = new Set(flows.map((f) => f.root_id));
    for (const f of flows) {
      const size = graph.nodes.filter((n) => (n.root_id ?? n.task_id) === f.root_id).length;
      containers.push({ id: `flow:${f.root_id}`, kind: "flow", label: f.label, parent: null, size });
    }
    for (const n of graph.nodes) {
      const r = n.root_id ?? n.task_id;
      if (flowIds.has(r)) parentOf.set(n.task_id, `flow:${r}`);
    }
  }

  // Group and chord containers: a task sits in the first container listing it.
  const memberOf = new Map<string, string>();
  const totals = new Map((graph.collapsed ?? []).map((c) => [c.id, c.total]));
  for (const g of graph.groups) {
    const members = g.members.filter((m) => nodesById.has(m) && !memberOf.has(m));
    // A box around one task says nothing (Celery gives some callbacks a group id of their own).
    if (members.length === 0 || (members.length === 1 && g.kind === "group")) continue;
    const id = `${g.kind}:${g.id}`;
    const outer = parentOf.get(members[0]) ?? null;
    containers.push({
      id,
      kind: g.kind,
      label: `${g.kind} · ${(totals.get(g.id) ?? members.length).toLocaleString()}`,
      parent: outer,
      size: members.length,
    });
    for (const m of members) {
      memberOf.set(m, id);
      parentOf.set(m, id);
    }
  }

  // Fan-outs to collapse: container members, or same-named children of one parent outside containers.
  const sets = new Map<string, { label: string; members: string[]; parent: string | null; shown: number }>();
  // Part of a fan-out may be expanded: the tasks picked on each click are drawn, the rest stay collapsed.
  const collapse = (id: string, label: string, members: string[], parent: string | null) => {
    const picked = expanded.get(id);
    const rest = picked ? members.filter((m) => !picked.has(m)) : members;
    if (rest.length === 0) return;
    sets.set(id, { label, members: rest, parent, shown: members.length - rest.length });
  };
  const byContainer = new Map<string, string[]>();
  for (const [m, c] of memberOf) {
    const list = byContainer.get(c);
    if (list) list.push(m);
    else byContainer.set(c, [m]);
  }
  for (const [c, members] of byContainer) {
    if (members.length > CLUSTER_AT) {
      const names = new Set(members.map((m) => nodesById.get(m)?.name ?? ""));
      const label = names.size === 1 ? shortName([...names][0]) : "tasks";
      collapse(`cluster:${c}`, label, members, c);
    }
  }
  const fan = new Map<string, string[]>();
  for (const n of graph.nodes) {
    if (memberOf.has(n.task_id) || !n.parent_id || n.parent_id === n.task_id) continue;
    const k = `${n.parent_id}\u0000${n.name ?? ""}`;
    const list = fan.get(k);
    if (list) list.push(n.task_id);
    else fan.set(k, [n.task_id]);
  }
  const big = graph.nodes.length > BIG_FLOW;
  const hasOut = new Set(graph.edges.map((e) => e.source));
  for (const [k, members] of fan) {
    const leaves = members.every((m) => !hasOut.has(m));
    if (members.length <= (big && leaves ? LEAF_CLUSTER_AT : CLUSTER_AT)) continue;
    const [parent, name] = k.split("\u0000");
    collapse(`cluster:${parent}:${name}`, shortName(name), members, parentOf.get(members[0]) ?? null);
  }

  const drawnAs = new Map<string, string>();
  const nodes: VisibleNode[] = [];
  // Groups the server sent collapsed: one node for the members not sent, inside the group's box.
  for (const c of graph.collapsed ?? []) {
    if (c.total <= c.listed.length) continue;
    const box = `${c.kind}:${c.id}`;
    const parent = containers.some((x) => x.id === box) ? box : null;
    const label = shortName(c.name);
    drawnAs.set(c.node_id, c.node_id);
    nodes.push({ id: c.node_id, kind: "cluster", parent, members: [], label, shown: c.listed.length, server: c });
  }
  for (const [id, s] of sets) {
    for (const m of s.members) drawnAs.set(m, id);
    nodes.push({ id, kind: "cluster", parent: s.parent, members: s.members, label: s.label, shown: s.shown });
  }
  for (const n of graph.nodes) {
    if (drawnAs.has(n.task_id)) continue;
    drawnAs.set(n.task_id, n.task_id);
    nodes.push({ id: n.task_id, kind: "task", parent: parentOf.get(n.task_id) ?? null });
  }

  const edgeMap = new Map<string, VisibleEdge>();
  for (const e of graph.edges) {
    const s = drawnAs.get(e.source);
    const t = drawnAs.get(e.target);
    if (!s || !t || s === t) continue;
    const id = `${s}>${t}>${e.kind}`;
    const have = edgeMap.get(id);
    if (have) have.count += e.count ?? 1;
    else edgeMap.set(id, { id, source: s, target: t, kind: e.kind, count: e.count ?? 1 });
  }
  const edges = [...edgeMap.values()];
  const key = [
    // A server-collapsed node's drawn members ("show more") change what it stands for.
    nodes.map((n) => `${n.id}@${n.parent ?? ""}${n.server ? `#${n.shown}` : ""}`).join(","),
    containers.map((c) => `${c.id}@${c.parent ?? ""}`).join(","),
    edges.map((e) => e.id).join(","),
  ].join("|");
  return { nodes, containers, edges, drawnAs, key };
}
